"""Camera message bytes -> RGB uint8 arrays for the model, with strict validation.

Raw `sensor_msgs/Image` buffers are wrapped as zero-copy numpy views (row padding handled with
strides), so the only full-resolution pass is the colour conversion or resize that has to happen
anyway. The model-frame helpers resize *before* reordering channels where the encoding allows it,
and JPEGs are decoded directly at a reduced scale (DCT-domain downscaling) when the model frame is
much smaller than the camera frame: a 1280x720 camera feeding a 224 px model never pays for a
full-resolution BGR->RGB swap.

Everything here accepts plain fields or any object with the sensor_msgs attributes, so it is
usable (and tested) without ROS. Bad input raises `ImageFormatError` with a short `reason` slug
that nodes use as a counter key.
"""

from __future__ import annotations

import functools
import io
import operator
from typing import Any

import cv2
import numpy as np

MAX_SIDE = 16384
"""Largest accepted image side in pixels; anything bigger is a corrupt header, not a camera."""

MAX_PIXELS = 100_000_000
"""Largest accepted pixel count (a 100 MP frame is ~300 MB of RGB)."""

MAX_COMPRESSED_BYTES = 64 * 1024 * 1024

# Canonical layout per accepted encoding spelling: (channels in the message, pixel order).
# `yuv422` is UYVY and `yuv422_yuy2` is YUYV in sensor_msgs/image_encodings.hpp; `uyvy`, `yuyv`
# and `yuy2` are what some v4l2/usb_cam versions put in the encoding field.
_LAYOUTS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "rgb"),
    "bgr8": (3, "bgr"),
    "rgba8": (4, "rgba"),
    "bgra8": (4, "bgra"),
    "mono8": (1, "mono"),
    "yuv422": (2, "uyvy"),
    "uyvy": (2, "uyvy"),
    "yuv422_yuy2": (2, "yuyv"),
    "yuyv": (2, "yuyv"),
    "yuy2": (2, "yuyv"),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# Encodings every cv_bridge release converts itself (yuv422_yuy2 support came late); the rest,
# and anything cv_bridge fails on, take our own path.
_BRIDGE_ENCODINGS = frozenset({"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422"})

_SMALL_TO_RGB = {
    "bgr": cv2.COLOR_BGR2RGB,
    "rgba": cv2.COLOR_RGBA2RGB,
    "bgra": cv2.COLOR_BGRA2RGB,
    "mono": cv2.COLOR_GRAY2RGB,
}
_YUV_TO_RGB = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuyv": cv2.COLOR_YUV2RGB_YUYV}

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


class ImageFormatError(ValueError):
    """An image the camera node refuses; `reason` is a stable slug for counters."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def image_to_rgb(
    height: int, width: int, encoding: str, step: int, data: Any, is_bigendian: int = 0
) -> np.ndarray:
    """Full-resolution (H, W, 3) uint8 RGB: a view of `data` for rgb8/bgr8/rgba8/bgra8 (no
    copy, possibly non-contiguous), one new array for mono8 and YUV 4:2:2.

    `is_bigendian` is accepted for signature parity and ignored: every supported encoding has
    8-bit channels.
    """
    del is_bigendian
    view, layout = _raw_view(height, width, encoding, step, data)
    if layout == "rgb":
        return view
    if layout == "bgr":
        return view[..., ::-1]
    if layout == "rgba":
        return view[..., :3]
    if layout == "bgra":
        return view[..., 2::-1]
    if layout == "mono":
        return cv2.cvtColor(view, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(view, _YUV_TO_RGB[layout])


def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """`image_to_rgb` for any object with sensor_msgs/Image attributes."""
    return image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)


def compressed_to_rgb(format: str, data: Any, min_size: int | None = None) -> np.ndarray:
    """Decoded (H, W, 3) uint8 RGB of a JPEG or PNG CompressedImage payload.

    With `min_size`, a JPEG may come back downscaled by 2, 4 or 8 as long as both sides stay
    >= min_size; callers that resize to a model frame anyway save most of the decode time.
    """
    return _decode_rgb(format, data, min_size)


def resize_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) contiguous uint8; squashes the aspect ratio like the SigLIP processor."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ImageFormatError("expected a uint8 numpy array", "bad_data")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageFormatError(f"expected an (H, W, 3) image, got shape {rgb.shape}", "bad_size")
    return _resize(rgb, _check_size(size))


def image_msg_to_frame(msg: Any, size: int, bridge: Any = None) -> np.ndarray:
    """Model frame (size, size, 3) uint8 RGB of a raw Image message.

    The message is always validated here first; `bridge` (a cv_bridge.CvBridge, see
    `default_bridge`) then converts the encodings it knows, so refusals never depend on it and
    a bridge failure falls back to our own conversion.
    """
    size = _check_size(size)
    view, layout = _raw_view(msg.height, msg.width, msg.encoding, msg.step, msg.data)
    if bridge is not None and msg.encoding in _BRIDGE_ENCODINGS:
        rgb = _bridge_rgb(bridge, msg, view.shape[:2])
        if rgb is not None:
            return resize_for_model(rgb, size)
    if layout in _YUV_TO_RGB:
        return _resize(cv2.cvtColor(view, _YUV_TO_RGB[layout]), size)
    small = _resize(view, size)
    if layout == "rgb":
        return small
    return cv2.cvtColor(small, _SMALL_TO_RGB[layout])


def compressed_msg_to_frame(msg: Any, size: int) -> np.ndarray:
    """Model frame (size, size, 3) uint8 RGB of a CompressedImage message (JPEG or PNG)."""
    size = _check_size(size)
    return _resize(_decode_rgb(msg.format, msg.data, size), size)


@functools.lru_cache(maxsize=1)
def default_bridge() -> Any:
    """A cv_bridge.CvBridge when cv_bridge is installed (Jetson/ROS images), else None."""
    try:
        from cv_bridge import CvBridge
    except (ImportError, OSError):
        return None
    return CvBridge()


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 1 <= size <= 4096:
        raise ImageFormatError(f"model frame size must be an int in [1, 4096], got {size!r}")
    return int(size)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    if height == size and width == size:
        return np.ascontiguousarray(image)
    shrinking = height >= size and width >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ImageFormatError(f"{name} must be an integer, got {value!r}", "bad_size")
    try:
        return operator.index(value)
    except TypeError:
        raise ImageFormatError(f"{name} must be an integer, got {value!r}", "bad_size") from None


def _byte_array(data: Any) -> np.ndarray:
    """Flat uint8 view of any bytes-like buffer; lists of ints are copied once."""
    try:
        buffer = memoryview(data)
    except TypeError:
        if not isinstance(data, list | tuple):
            raise ImageFormatError(
                f"data must be a byte buffer, got {type(data).__name__}", "bad_data"
            ) from None
        try:
            buffer = memoryview(bytes(data))
        except (TypeError, ValueError) as exc:
            raise ImageFormatError(f"data is not a sequence of bytes: {exc}", "bad_data") from None
    if buffer.itemsize != 1 or buffer.ndim != 1:
        try:
            buffer = buffer.cast("B")
        except TypeError as exc:
            raise ImageFormatError(f"data is not a contiguous buffer: {exc}", "bad_data") from None
    return np.frombuffer(buffer, dtype=np.uint8)


def _raw_view(
    height: Any, width: Any, encoding: Any, step: Any, data: Any
) -> tuple[np.ndarray, str]:
    """Validated zero-copy view of a raw image: (H, W, C) or (H, W) for mono, plus its layout."""
    height = _as_int(height, "height")
    width = _as_int(width, "width")
    step = _as_int(step, "step")
    if not isinstance(encoding, str):
        raise ImageFormatError(f"encoding must be a string, got {encoding!r}", "bad_encoding")
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageFormatError(_encoding_refusal(encoding), "unsupported_encoding")
    channels, order = layout
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"empty image: {width}x{height}", "zero_size")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageFormatError(f"absurd image size {width}x{height}", "too_large")
    if order in _YUV_TO_RGB and width % 2:
        raise ImageFormatError(f"{encoding} needs an even width, got {width}", "bad_size")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageFormatError(
            f"step {step} < width*channels {row_bytes} for {width}x{height} {encoding}", "bad_step"
        )
    if step > 4 * row_bytes + 4096:
        raise ImageFormatError(f"absurd step {step} for a {row_bytes}-byte row", "bad_step")
    flat = _byte_array(data)
    if flat.size != step * height:
        raise ImageFormatError(
            f"data has {flat.size} bytes, expected step*height = {step}*{height} = {step * height}",
            "bad_length",
        )
    if channels == 1:
        return np.ndarray((height, width), np.uint8, flat, strides=(step, 1)), order
    view = np.ndarray((height, width, channels), np.uint8, flat, strides=(step, channels, 1))
    return view, order


def _encoding_refusal(encoding: str) -> str:
    supported = ", ".join(SUPPORTED_ENCODINGS)
    if any(depth in encoding for depth in ("16", "32", "64")):
        return f"unsupported encoding {encoding!r}: only 8-bit images are accepted ({supported})"
    return f"unsupported encoding {encoding!r}; supported: {supported}"


def _bridge_rgb(bridge: Any, msg: Any, shape: tuple[int, int]) -> np.ndarray | None:
    """cv_bridge's RGB conversion, or None when it fails on a message we already validated.

    A failure here is a cv_bridge limitation (versions differ), not bad input, so the caller
    converts the frame itself instead of dropping it.
    """
    try:
        rgb = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception:  # cv_bridge raises CvBridgeError, TypeError, cv2.error, ...
        return None
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape != (*shape, 3):
        return None
    return rgb


def _decode_rgb(fmt: Any, data: Any, min_size: int | None) -> np.ndarray:
    """Validated, decoded RGB image; JPEGs are decoded at the coarsest scale >= min_size.

    JPEGs go through libjpeg-turbo (simplejpeg) in strict mode and PNGs through Pillow: both
    turn what libjpeg/libpng only warn about (a header that promises more pixels than the data
    holds, a truncated stream, a bad checksum) into a refusal, and neither writes to stderr, so
    a stream of bad frames costs one counter, not a line of C-library noise per frame.
    """
    if not isinstance(fmt, str):
        raise ImageFormatError(f"format must be a string, got {fmt!r}", "unsupported_format")
    flat = _byte_array(data)
    if flat.size == 0:
        raise ImageFormatError("empty compressed image", "zero_size")
    if flat.size > MAX_COMPRESSED_BYTES:
        raise ImageFormatError(f"compressed image of {flat.size} bytes is absurd", "too_large")
    codec = _codec(fmt, flat)
    if codec == "jpeg":
        width, height = _jpeg_size(flat)
        if bytes(flat[-64:]).rstrip(b"\x00")[-2:] != b"\xff\xd9":
            raise ImageFormatError("truncated JPEG: no end-of-image marker", "corrupt")
    else:
        width, height = _png_size(flat)
    if width <= 0 or height <= 0:
        raise ImageFormatError(f"{codec} header says {width}x{height}", "zero_size")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise ImageFormatError(f"absurd {codec} size {width}x{height}", "too_large")
    scale = _jpeg_scale(width, height, min_size) if codec == "jpeg" else 1
    expected = (-(-height // scale), -(-width // scale), 3)
    rgb = _decode_jpeg(flat, scale, expected) if codec == "jpeg" else _decode_png(flat)
    if rgb.shape != expected:
        raise ImageFormatError(
            f"corrupt {codec}: header says {width}x{height}, decoded "
            f"{rgb.shape[1] * scale}x{rgb.shape[0] * scale}",
            "size_mismatch",
        )
    return rgb


def _decode_jpeg(flat: np.ndarray, scale: int, expected: tuple[int, int, int]) -> np.ndarray:
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg(
            flat,
            colorspace="RGB",
            min_factor=scale,
            min_height=expected[0],
            min_width=expected[1],
            strict=True,
        )
    except ValueError as exc:
        problem = " ".join(str(exc).split())
        reason = "size_mismatch" if "premature end" in problem else "corrupt"
        raise ImageFormatError(f"corrupt jpeg: {problem}", reason) from None


def _decode_png(flat: np.ndarray) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(flat.tobytes()), formats=("PNG",)) as image:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            return np.asarray(rgb)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        problem = " ".join(str(exc).split())
        raise ImageFormatError(f"corrupt png: {problem}", "corrupt") from None


def _codec(fmt: str, flat: np.ndarray) -> str:
    """jpeg or png from the CompressedImage format string, checked against the magic bytes."""
    text = fmt.lower()
    if "compresseddepth" in text:
        raise ImageFormatError(f"depth images are not supported ({fmt!r})", "unsupported_format")
    original = text.split(";", 1)[0].strip() if ";" in text else ""
    if any(depth in original for depth in ("16", "32", "64")):
        raise ImageFormatError(f"only 8-bit images are accepted, got {fmt!r}", "unsupported_format")
    head = bytes(flat[:8])
    sniffed = "jpeg" if head.startswith(_JPEG_MAGIC) else "png" if head == _PNG_MAGIC else None
    if "jpeg" in text or "jpg" in text:
        declared = "jpeg"
    elif "png" in text:
        declared = "png"
    elif text.strip() == "":
        declared = sniffed
    else:
        declared = None
    if declared is None:
        raise ImageFormatError(
            f"unsupported compressed format {fmt!r}: jpeg or png only", "unsupported_format"
        )
    if sniffed != declared:
        raise ImageFormatError(f"data is not a {declared} stream (format {fmt!r})", "corrupt")
    return declared


def _png_size(flat: np.ndarray) -> tuple[int, int]:
    header = bytes(flat[:33])
    if len(header) < 33 or header[12:16] != b"IHDR":
        raise ImageFormatError("corrupt png: no IHDR header", "corrupt")
    if header[24] > 8:
        raise ImageFormatError(
            f"only 8-bit images are accepted, got a {header[24]}-bit png", "unsupported_format"
        )
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def _jpeg_size(flat: np.ndarray) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment, without decoding."""
    buffer = memoryview(flat)
    position, end = 2, flat.size
    while position + 4 <= end:
        if buffer[position] != 0xFF:
            raise ImageFormatError("corrupt jpeg: bad segment marker", "corrupt")
        marker = buffer[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            break
        length = (buffer[position + 2] << 8) | buffer[position + 3]
        if length < 2:
            raise ImageFormatError("corrupt jpeg: bad segment length", "corrupt")
        if marker in _JPEG_SOF and position + 9 <= end:
            height = (buffer[position + 5] << 8) | buffer[position + 6]
            width = (buffer[position + 7] << 8) | buffer[position + 8]
            return width, height
        position += 2 + length
    raise ImageFormatError("corrupt jpeg: no frame header", "corrupt")


def _jpeg_scale(width: int, height: int, min_size: int | None) -> int:
    if min_size is None:
        return 1
    for scale in (8, 4, 2):
        if -(-width // scale) >= min_size and -(-height // scale) >= min_size:
            return scale
    return 1
