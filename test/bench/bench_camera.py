"""Camera-node cost per frame for a 30 fps 1280x720 camera: decode + resize + scene score.

Measures the exact work the `vla_camera` worker does per frame (no DDS), for raw rgb8, bgr8,
yuyv and jpeg input, plus two naive baselines that show what the fast paths save: convert the
full frame before resizing (bgr8) and decode the JPEG at full resolution. Prints medians, p99s
and ratios; writes camera.json to --out.

    python test/bench/bench_camera.py --out out/bench
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from vla_ros import bench
from vla_ros.core.image import (
    compressed_msg_to_frame,
    compressed_to_rgb,
    image_msg_to_frame,
    image_msg_to_rgb,
    resize_for_model,
)
from vla_ros.core.scene import SceneChangeDetector

WIDTH, HEIGHT, FPS = 1280, 720, 30


def camera_scene(seed: int = 0) -> np.ndarray:
    """A plausible 720p view: lit gradient, textured objects and sensor noise (JPEG-realistic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    image = np.stack([xx / WIDTH * 180 + 40, yy / HEIGHT * 150 + 60, (xx + yy) / 20 % 90 + 80], -1)
    for _ in range(12):
        x, y = rng.integers(0, WIDTH - 200), rng.integers(0, HEIGHT - 150)
        w, h = rng.integers(60, 200), rng.integers(40, 150)
        texture = rng.integers(0, 60, (h // 8 + 1, w // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)
        image[y : y + h, x : x + w] = rng.integers(0, 196, 3) + texture[:h, :w]
    image += rng.normal(0.0, 3.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def raw_msg(pixels: np.ndarray, encoding: str) -> Image:
    height, width = pixels.shape[:2]
    data = np.ascontiguousarray(pixels).tobytes()
    return Image(height=height, width=width, encoding=encoding, step=len(data) // height, data=data)


def naive_bgr8(msg: Image, size: int) -> np.ndarray:
    """Full-resolution BGR->RGB copy first, then resize: what a straightforward node does."""
    return resize_for_model(np.ascontiguousarray(image_msg_to_rgb(msg)), size)


def naive_jpeg(msg: CompressedImage, size: int) -> np.ndarray:
    return resize_for_model(compressed_to_rgb(msg.format, msg.data), size)


def measure(convert: Callable[[], np.ndarray], iterations: int) -> dict[str, float]:
    """Per-frame milliseconds of convert + scene score, as the camera worker runs them."""
    detector = SceneChangeDetector()
    for stamp in range(5):
        detector.update(convert(), stamp)
    detector.set_reference(0)
    samples = []
    for stamp in range(iterations):
        start = time.perf_counter()
        detector.update(convert(), 10 + stamp)
        samples.append((time.perf_counter() - start) * 1e3)
    values = np.asarray(samples)
    return {"median_ms": float(np.median(values)), "p99_ms": float(np.percentile(values, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for camera.json")
    parser.add_argument("--iterations", type=int, default=90, help="frames per case (90 = 3 s)")
    parser.add_argument("--size", type=int, default=224, help="model frame side in pixels")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads (shared machine)")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    args = parser.parse_args(argv)
    started = bench.conditions()
    cv2.setNumThreads(args.threads)

    rgb = camera_scene()
    ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode the benchmark JPEG")
    messages = {
        "rgb8": raw_msg(rgb, "rgb8"),
        "bgr8": raw_msg(rgb[..., ::-1], "bgr8"),
        "yuyv": raw_msg(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV), "yuv422_yuy2"),
        "jpeg": CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpeg.tobytes()),
    }
    size = args.size
    cases: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
        "rgb8": ("rgb8", lambda: image_msg_to_frame(messages["rgb8"], size)),
        "bgr8": ("bgr8", lambda: image_msg_to_frame(messages["bgr8"], size)),
        "yuyv": ("yuyv", lambda: image_msg_to_frame(messages["yuyv"], size)),
        "jpeg": ("jpeg", lambda: compressed_msg_to_frame(messages["jpeg"], size)),
        "bgr8_naive": ("bgr8", lambda: naive_bgr8(messages["bgr8"], size)),
        "jpeg_full_decode": ("jpeg", lambda: naive_jpeg(messages["jpeg"], size)),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (_, convert) in cases.items():
        results[name] = measure(convert, args.iterations)
    budget_ms = 1e3 / FPS
    for name, (baseline, _) in cases.items():
        row = results[name]
        row["budget_share"] = row["median_ms"] / budget_ms
        row["vs_rgb8"] = row["median_ms"] / results["rgb8"]["median_ms"]
        if name != baseline:
            row["vs_fast_path"] = row["median_ms"] / results[baseline]["median_ms"]

    print(f"camera node per frame: {WIDTH}x{HEIGHT} -> {size}x{size} + scene score, ", end="")
    print(f"{args.iterations} frames, {args.threads} OpenCV thread(s), jpeg {len(jpeg)} bytes")
    print(f"{'case':<18}{'median ms':>10}{'p99 ms':>9}{'of 33 ms':>10}{'vs rgb8':>9}{'vs fast':>9}")
    for name, row in results.items():
        fast = f"{row['vs_fast_path']:.2f}x" if "vs_fast_path" in row else "-"
        print(
            f"{name:<18}{row['median_ms']:>10.2f}{row['p99_ms']:>9.2f}"
            f"{row['budget_share']:>10.1%}{row['vs_rgb8']:>8.2f}x{fast:>9}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "camera",
        "input": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "jpeg_bytes": len(jpeg)},
        "image_size": size,
        "iterations": args.iterations,
        "opencv_threads": args.threads,
        "opencv": cv2.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    bench.write_report(args.out / "camera.json", report, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
