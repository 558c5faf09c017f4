"""Image conversion: encodings round-trip, padding is ignored, bad input is refused cleanly."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vla_ros.core.image import (
    SUPPORTED_ENCODINGS,
    ImageFormatError,
    compressed_msg_to_frame,
    compressed_to_rgb,
    image_msg_to_frame,
    image_msg_to_rgb,
    image_to_rgb,
    resize_for_model,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- independent encoders: RGB -> message bytes, written from the format definitions -----------


def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """BT.601 limited-range 4:2:2 packing (the convention OpenCV and V4L2 drivers use)."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    y, u, v = (np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v))
    chroma = np.empty_like(y)
    chroma[:, 0::2] = (u[:, 0::2].astype(int) + u[:, 1::2]) // 2
    chroma[:, 1::2] = (v[:, 0::2].astype(int) + v[:, 1::2]) // 2
    pair = (y, chroma) if order == "yuyv" else (chroma, y)
    return np.stack(pair, axis=-1)


def encode(rgb: np.ndarray, encoding: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W, C) pixel bytes of `rgb` in `encoding`; alpha is random to prove it is ignored."""
    alpha = rng.integers(0, 256, (*rgb.shape[:2], 1), dtype=np.uint8)
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[..., ::-1]
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], axis=-1)
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], alpha], axis=-1)
    if encoding == "mono8":
        return rgb[..., :1]
    if encoding in ("yuv422", "uyvy"):
        return _yuv422(rgb, "uyvy")
    return _yuv422(rgb, "yuyv")


def representable(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The image the encoding can carry exactly: grey for mono, equal pixel pairs for 4:2:2."""
    if encoding == "mono8":
        return np.repeat(rgb[..., :1], 3, axis=-1)
    if "yu" in encoding or encoding == "uyvy":
        return np.repeat(rgb[:, 0::2], 2, axis=1)
    return rgb


def tolerance(encoding: str) -> int:
    return 3 if ("yu" in encoding or encoding == "uyvy") else 0


def make_msg(pixels: np.ndarray, encoding: str, pad: int, rng: np.random.Generator):
    """An Image-like object with `pad` garbage bytes at the end of each row."""
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1)
    garbage = rng.integers(0, 256, (height, pad), dtype=np.uint8)
    data = np.ascontiguousarray(np.concatenate([row, garbage], axis=1)).tobytes()
    return SimpleNamespace(
        height=height,
        width=width,
        encoding=encoding,
        step=row.shape[1] + pad,
        is_bigendian=0,
        data=array.array("B", data),
    )


image_shapes = st.tuples(st.integers(1, 24), st.integers(1, 16).map(lambda n: 2 * n))


@SETTINGS
@given(
    encoding=st.sampled_from(SUPPORTED_ENCODINGS),
    shape=image_shapes,
    pad=st.integers(0, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_encoding_round_trips_with_row_padding(encoding, shape, pad, seed):
    rng = np.random.default_rng(seed)
    rgb = representable(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), encoding)
    msg = make_msg(encode(rgb, encoding, rng), encoding, pad, rng)

    out = image_msg_to_rgb(msg)

    assert out.shape == (*shape, 3)
    assert out.dtype == np.uint8
    error = np.abs(out.astype(int) - rgb).max()
    assert error <= tolerance(encoding), f"{encoding}: max error {error}"


@SETTINGS
@given(
    encoding=st.sampled_from(SUPPORTED_ENCODINGS),
    shape=st.tuples(st.integers(8, 48), st.integers(4, 24).map(lambda n: 2 * n)),
    size=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_model_frame_equals_convert_then_resize(encoding, shape, size, seed):
    """The resize-before-reorder fast path must give the same pixels as the obvious order."""
    rng = np.random.default_rng(seed)
    rgb = representable(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), encoding)
    msg = make_msg(encode(rgb, encoding, rng), encoding, 6, rng)

    frame = image_msg_to_frame(msg, size)

    assert frame.shape == (size, size, 3)
    assert frame.dtype == np.uint8
    assert frame.flags.c_contiguous
    np.testing.assert_array_equal(frame, resize_for_model(image_msg_to_rgb(msg), size))


def test_rgb8_and_bgr8_are_zero_copy_views_of_the_message_buffer():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        msg = make_msg(encode(rgb, encoding, rng), encoding, 5, rng)
        out = image_msg_to_rgb(msg)
        assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8)), encoding
        np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(12)),
        bytearray(range(12)),
        array.array("B", range(12)),
        list(range(12)),
        np.arange(12, dtype=np.uint8),
        memoryview(bytes(range(12))),
    ],
    ids=["bytes", "bytearray", "array", "list", "numpy", "memoryview"],
)
def test_accepts_every_byte_container_rclpy_or_users_hand_over(data):
    out = image_to_rgb(2, 2, "rgb8", 6, data)
    np.testing.assert_array_equal(out.reshape(-1), np.arange(12))


@pytest.mark.parametrize(
    ("fields", "reason", "words"),
    [
        ((4, 4, "rgb8", 12, bytes(47)), "bad_length", "47 bytes"),
        ((4, 4, "rgb8", 12, bytes(49)), "bad_length", "expected"),
        ((4, 4, "rgb8", 11, bytes(44)), "bad_step", "step 11"),
        ((4, 4, "mono16", 8, bytes(32)), "unsupported_encoding", "8-bit"),
        ((4, 4, "16UC1", 8, bytes(32)), "unsupported_encoding", "16UC1"),
        ((4, 4, "bayer_rggb8", 4, bytes(16)), "unsupported_encoding", "bayer_rggb8"),
        ((4, 4, "8UC3", 12, bytes(48)), "unsupported_encoding", "supported"),
        ((0, 4, "rgb8", 12, b""), "zero_size", "empty"),
        ((4, 0, "rgb8", 0, b""), "zero_size", "empty"),
        ((-3, 4, "rgb8", 12, b""), "zero_size", "empty"),
        ((100_000, 100_000, "rgb8", 300_000, b""), "too_large", "absurd"),
        ((4, 4, "rgb8", 10**9, b""), "bad_step", "absurd step"),
        ((4, 3, "yuv422_yuy2", 6, bytes(24)), "bad_size", "even width"),
        ((4, 4, None, 12, bytes(48)), "bad_encoding", "string"),
        ((4.0, 4, "rgb8", 12, bytes(48)), "bad_size", "integer"),
        ((True, 4, "rgb8", 12, bytes(12)), "bad_size", "integer"),
        ((4, 4, "rgb8", 12, "x" * 48), "bad_data", "byte buffer"),
        ((4, 4, "rgb8", 12, [300] * 48), "bad_data", "bytes"),
        ((4, 4, "rgb8", 12, None), "bad_data", "byte buffer"),
    ],
)
def test_malformed_raw_images_are_refused_with_a_reason(fields, reason, words):
    with pytest.raises(ImageFormatError, match=words) as info:
        image_to_rgb(*fields)
    assert info.value.reason == reason
    msg = SimpleNamespace(
        height=fields[0], width=fields[1], encoding=fields[2], step=fields[3], data=fields[4]
    )
    with pytest.raises(ImageFormatError):
        image_msg_to_frame(msg, 16)


field_values = st.one_of(
    st.integers(-5, 70), st.integers(), st.none(), st.floats(), st.text(max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(
    height=field_values,
    width=field_values,
    step=field_values,
    encoding=st.one_of(
        st.sampled_from((*SUPPORTED_ENCODINGS, "mono16", "16UC1", "32FC1", "jpeg", "")),
        st.text(max_size=12),
    ),
    data=st.one_of(st.binary(max_size=600), st.lists(st.integers(-2, 300), max_size=40)),
)
def test_random_garbage_fields_give_an_image_or_a_clean_refusal(
    height, width, step, encoding, data
):
    try:
        out = image_to_rgb(height, width, encoding, step, data)
    except ImageFormatError as exc:
        refusal = exc
    else:
        refusal = None
    if refusal is not None:
        assert refusal.reason
        assert str(refusal)
        return
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8


# --- compressed ----------------------------------------------------------------------------------


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blocky colour image: survives JPEG and resizing with small, predictable error."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST)


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buffer = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buffer.tobytes()


def png_bytes(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", image)
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize(
    "fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", "JPEG", ""]
)
def test_jpeg_decodes_to_rgb(fmt):
    rgb = smooth_image(48, 64)
    out = compressed_to_rgb(fmt, array.array("B", jpeg_bytes(rgb)))
    assert out.shape == (48, 64, 3)
    assert np.abs(out.astype(int) - rgb).mean() < 6
    assert np.abs(out.astype(int) - rgb[..., ::-1]).mean() > 20, "channel order must be RGB"


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_png_decodes_to_exact_rgb(fmt):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = compressed_to_rgb(fmt, png_bytes(rgb[..., ::-1]))
    np.testing.assert_array_equal(out, rgb)


def test_grey_png_becomes_three_equal_channels():
    grey = np.random.default_rng(2).integers(0, 256, (9, 7), dtype=np.uint8)
    out = compressed_to_rgb("mono8; png compressed mono8", png_bytes(grey))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


def test_jpeg_is_decoded_at_reduced_scale_when_the_model_frame_is_small():
    rgb = smooth_image(720, 1280)
    data = jpeg_bytes(rgb)
    reduced = compressed_to_rgb("jpeg", data, min_size=100)
    assert reduced.shape == (180, 320, 3)  # 1/4 scale: the coarsest with both sides >= 100
    full = compressed_to_rgb("jpeg", data)
    frame = compressed_msg_to_frame(SimpleNamespace(format="jpeg", data=data), 100)
    assert frame.shape == (100, 100, 3)
    assert np.abs(frame.astype(int) - resize_for_model(full, 100)).mean() < 3
    assert np.abs(frame.astype(int) - resize_for_model(rgb, 100)).mean() < 3


def _png_16bit() -> bytes:
    return png_bytes(np.full((4, 4), 40000, dtype=np.uint16))


@pytest.mark.parametrize(
    ("fmt", "data", "reason"),
    [
        ("jpeg", b"", "zero_size"),
        ("jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "corrupt"),
        ("jpeg", b"not an image at all", "corrupt"),
        ("jpeg", jpeg_bytes(smooth_image(32, 32))[:300], "corrupt"),
        ("png", jpeg_bytes(smooth_image(32, 32)), "corrupt"),
        ("jpeg", png_bytes(smooth_image(8, 8)), "corrupt"),
        ("png", png_bytes(smooth_image(32, 32))[:60], "corrupt"),
        ("bmp", b"BM" + bytes(100), "unsupported_format"),
        ("16UC1; compressedDepth png", _png_16bit(), "unsupported_format"),
        ("mono16; png compressed mono16", _png_16bit(), "unsupported_format"),
        ("png", _png_16bit(), "unsupported_format"),
        (None, b"\xff\xd8\xff", "unsupported_format"),
    ],
    ids=[
        "empty",
        "jpeg-garbage-body",
        "text",
        "truncated-jpeg",
        "jpeg-labelled-png",
        "png-labelled-jpeg",
        "truncated-png",
        "bmp",
        "compressed-depth",
        "mono16-png",
        "16bit-png",
        "format-none",
    ],
)
def test_bad_compressed_images_are_refused(fmt, data, reason):
    with pytest.raises(ImageFormatError) as info:
        compressed_to_rgb(fmt, data)
    assert info.value.reason == reason, str(info.value)


def test_absurd_jpeg_header_is_refused_before_decoding():
    data = bytearray(jpeg_bytes(smooth_image(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    with pytest.raises(ImageFormatError, match="absurd") as info:
        compressed_to_rgb("jpeg", bytes(data))
    assert info.value.reason == "too_large"


def _lying_jpeg(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header claims `width`x`height`."""
    data = bytearray(jpeg_bytes(smooth_image(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _lying_png(width: int, height: int) -> bytes:
    """A 16x16 PNG whose IHDR claims `width`x`height` (with its CRC fixed, so only size lies)."""
    import zlib

    data = bytearray(png_bytes(smooth_image(16, 16)))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "codec", "reason"),
    [
        (_lying_jpeg(640, 480), "jpeg", "size_mismatch"),
        (_lying_jpeg(64, 64), "jpeg", "size_mismatch"),
        (_lying_png(640, 480), "png", "corrupt"),
        (_lying_png(32, 16), "png", "corrupt"),
    ],
    ids=["jpeg-640x480", "jpeg-64x64", "png-640x480", "png-32x16"],
)
def test_header_that_lies_about_the_size_is_refused(data, codec, reason):
    """libjpeg/libpng would fill the missing pixels (grey) and only warn on stderr."""
    for min_size in (None, 8):
        with pytest.raises(ImageFormatError, match=f"corrupt {codec}") as info:
            compressed_to_rgb(codec, data, min_size=min_size)
        assert info.value.reason == reason, str(info.value)


def test_bad_frames_write_nothing_to_stderr(capfd):
    """A stream of bad frames must not flood the log with C-library warnings, one per frame."""
    bad = [
        _lying_jpeg(640, 480),
        jpeg_bytes(smooth_image(32, 32))[:300] + b"\xff\xd9",
        _lying_png(64, 64),
        png_bytes(smooth_image(32, 32))[:60],
    ]
    for _ in range(20):
        for data in bad:
            codec = "png" if data.startswith(b"\x89PNG") else "jpeg"
            with pytest.raises(ImageFormatError):
                compressed_msg_to_frame(SimpleNamespace(format=codec, data=data), 32)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


@settings(max_examples=80, deadline=None)
@given(
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 10**6),
    codec=st.sampled_from(["jpeg", "png"]),
)
def test_damaged_compressed_bytes_never_crash(flips, cut, codec):
    image = smooth_image(24, 40)
    data = bytearray(jpeg_bytes(image) if codec == "jpeg" else png_bytes(image))
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: max(1, cut % (len(data) + 1))]
    try:
        out = compressed_to_rgb(codec, bytes(data), min_size=8)
    except ImageFormatError as exc:
        refusal = exc
    else:
        refusal = None
    if refusal is not None:
        assert refusal.reason
        return
    assert out.ndim == 3
    assert out.shape[2] == 3
    assert out.dtype == np.uint8


# --- resize --------------------------------------------------------------------------------------


@SETTINGS
@given(
    image=arrays(np.uint8, st.tuples(st.integers(1, 50), st.integers(1, 50), st.just(3))),
    size=st.integers(1, 64),
)
def test_resize_always_gives_a_contiguous_square(image, size):
    out = resize_for_model(image, size)
    assert out.shape == (size, size, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous


def test_shrinking_averages_areas_instead_of_aliasing():
    fine_checkerboard = np.indices((64, 64)).sum(axis=0) % 2 * 255
    image = np.repeat(fine_checkerboard[..., None], 3, axis=-1).astype(np.uint8)
    out = resize_for_model(image, 16)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


@pytest.mark.parametrize(
    ("image", "size"),
    [
        (np.zeros((4, 4), np.uint8), 8),
        (np.zeros((4, 4, 4), np.uint8), 8),
        (np.zeros((4, 4, 3), np.float32), 8),
        (np.zeros((0, 4, 3), np.uint8), 8),
        (np.zeros((4, 4, 3), np.uint8), 0),
        (np.zeros((4, 4, 3), np.uint8), 10**6),
        (np.zeros((4, 4, 3), np.uint8), 8.0),
    ],
)
def test_resize_refuses_bad_arguments(image, size):
    with pytest.raises(ImageFormatError):
        resize_for_model(image, size)


# --- cv_bridge hand-off ------------------------------------------------------------------------


class RecordingBridge:
    """Stands in for cv_bridge.CvBridge (not installable here): converts like it, records calls."""

    def __init__(self, result=None, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.result = result
        self.error = error

    def imgmsg_to_cv2(self, msg, desired_encoding: str = "passthrough"):
        self.calls.append(f"{msg.encoding}->{desired_encoding}")
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else np.array(image_msg_to_rgb(msg))


def test_bridge_converts_canonical_encodings_after_our_validation():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    bridge = RecordingBridge()
    frame = image_msg_to_frame(make_msg(encode(rgb, "bgr8", rng), "bgr8", 0, rng), 8, bridge)
    np.testing.assert_array_equal(frame, resize_for_model(rgb, 8))
    assert bridge.calls == ["bgr8->rgb8"]

    image_msg_to_frame(make_msg(encode(rgb, "yuyv", rng), "yuyv", 0, rng), 8, bridge)
    assert bridge.calls == ["bgr8->rgb8"], "driver spellings cv_bridge does not know stay ours"

    with pytest.raises(ImageFormatError):
        image_msg_to_frame(SimpleNamespace(height=2, width=2, encoding="rgb8", step=6, data=b""), 8)
    assert bridge.calls == ["bgr8->rgb8"], "malformed messages never reach the bridge"


@pytest.mark.parametrize(
    "bridge",
    [
        RecordingBridge(error=TypeError("unsupported conversion")),
        RecordingBridge(result=np.zeros((3, 3, 3), np.uint8)),
        RecordingBridge(result=np.zeros((12, 16, 3), np.float32)),
    ],
    ids=["raises", "wrong-shape", "wrong-dtype"],
)
def test_bridge_failures_fall_back_to_our_conversion(bridge):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    msg = make_msg(encode(rgb, "bgra8", rng), "bgra8", 4, rng)
    frame = image_msg_to_frame(msg, 8, bridge)
    assert bridge.calls == ["bgra8->rgb8"]
    np.testing.assert_array_equal(frame, resize_for_model(rgb, 8))
