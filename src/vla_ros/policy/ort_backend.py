"""`onnxruntime` trunk backend: the exported vision and prefix graphs in ONNX Runtime sessions.

CPU: `CPUExecutionProvider` (CI, x86 without a GPU). `cuda:N`: onnxruntime-gpu's TensorRT and
CUDA execution providers on device N; the session must really have the CUDA provider or loading
fails (no silent CPU run). On the GPU the image embeddings stay in device memory between the two
graphs (I/O binding); only the pixels go up and the (d,) feature comes back.
Prefix sessions are created per text bucket on first use (a new instruction length).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.policy.manifest import ExportManifest
from vla_ros.policy.trunk import BackendError, GraphTrunk

_LOG = logging.getLogger(__name__)


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            "backend onnxruntime needs the onnxruntime package (CPU) or onnxruntime-gpu "
            f"(Jetson/CUDA): {exc}"
        ) from exc
    return onnxruntime


def providers_for(device: torch.device, available: list[str], cache_dir: Path) -> list[Any]:
    """Execution providers for `device`; BackendError when this onnxruntime cannot serve it."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise BackendError(f"backend onnxruntime runs on cpu or cuda:N, not {device}")
    if "CUDAExecutionProvider" not in available:
        raise BackendError(
            f"device {device} needs onnxruntime-gpu (CUDAExecutionProvider); this onnxruntime "
            f"offers {available}"
        )
    index = device.index or 0
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    "device_id": index,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_fp16_enable": False,
                },
            )
        )
    providers.append(("CUDAExecutionProvider", {"device_id": index}))
    return providers


class OrtTrunk(GraphTrunk):
    """Vision + prefix graphs in onnxruntime sessions."""

    backend = "onnxruntime"

    def __init__(
        self,
        model_dir: str | Path,
        onnx_dir: str | Path,
        manifest: ExportManifest,
        device: torch.device,
        action_token: torch.Tensor,
        threads: int = 0,
    ) -> None:
        super().__init__(
            model_dir,
            manifest.hidden_size,
            manifest.num_image_tokens,
            manifest.buckets,
            action_token,
            device,
            manifest.vision.inputs["pixel_values"]["dtype"],
        )
        self.ort = import_onnxruntime()
        self.onnx_dir = Path(onnx_dir)
        self.manifest = manifest
        self.threads = threads
        self.providers = providers_for(
            device, self.ort.get_available_providers(), self.onnx_dir / "ort-trt-cache"
        )
        self._gpu = device.type == "cuda"
        self._vision = self._session(manifest.vision.file)
        self._prefix: dict[int, Any] = {}

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        onnx_dir: str | Path,
        device: torch.device,
        action_token: torch.Tensor,
        threads: int = 0,
    ) -> OrtTrunk:
        """Check the manifest against the model directory, then open the vision session."""
        manifest = ExportManifest.load(onnx_dir)
        manifest.verify(onnx_dir, model_dir)
        if manifest.precision in ("fp16", "bf16") and device.type == "cpu":
            _LOG.warning(
                "%s holds a %s export, made for GPUs; on the CPU it runs slowly (fp16) or in "
                "fp32 (bf16 graphs are stored in fp32 and only TensorRT builds them in bf16)",
                onnx_dir,
                manifest.precision,
            )
        return cls(model_dir, onnx_dir, manifest, device, action_token, threads)

    def _session(self, file: str) -> Any:
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        path = self.onnx_dir / file
        try:
            session = self.ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        if self._gpu and "CUDAExecutionProvider" not in session.get_providers():
            raise BackendError(
                f"onnxruntime opened {path} without CUDAExecutionProvider "
                f"({session.get_providers()}); refusing to run a cuda device on the CPU"
            )
        return session

    def prefix_session(self, bucket: int) -> Any:
        session = self._prefix.get(bucket)
        if session is None:
            session = self._session(self.manifest.graph(bucket).file)
            self._prefix[bucket] = session
        return session

    def vision(self, pixel_values: np.ndarray) -> Any:
        if not self._gpu:
            return self._vision.run(None, {"pixel_values": pixel_values})[0]
        binding = self._vision.io_binding()
        binding.bind_cpu_input("pixel_values", pixel_values)
        binding.bind_output("image_embeds", "cuda", self.device.index or 0)
        self._vision.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def prefix(
        self, bucket: int, image_embeds: Any, text: np.ndarray, act_index: np.ndarray
    ) -> np.ndarray:
        session = self.prefix_session(bucket)
        if not self._gpu:
            feeds = {"image_embeds": image_embeds, "text_embeds": text, "act_index": act_index}
            return session.run(None, feeds)[0]
        binding = session.io_binding()
        binding.bind_ortvalue_input("image_embeds", image_embeds)
        binding.bind_cpu_input("text_embeds", text)
        binding.bind_cpu_input("act_index", act_index)
        binding.bind_output("feature", "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]
