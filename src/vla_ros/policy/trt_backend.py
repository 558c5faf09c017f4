"""`tensorrt` trunk backend: engines built from the exported ONNX with the TensorRT Python API.

One engine per graph (vision, each prefix bucket), built on first load and cached next to the
export (`<onnx dir>/trt/`, or `engine_dir`). Engines only run on the TensorRT version and GPU
that built them, so the cache key is (graph checksum, precision, TensorRT version, GPU name,
compute capability) and a sidecar JSON records it; an engine whose record disagrees with this
machine is refused with both sides named, never run.

Precision (from the export's manifest):
- fp32: fp32 graphs, TF32 allowed.
- fp16: the fp16 graphs as exported, built strongly typed (norms and softmax stay fp32 as
  transformers computes them; TensorRT does not re-type anything).
- bf16: fp32 graphs built with the BF16 flag, normalization and softmax layers pinned to fp32
  (Orin is SM87: bf16 tensor cores, no fp16 overflow in Gemma's residual stream).
- int8: static QDQ graphs (explicit quantization), built strongly typed. Dynamic INT8 exports use
  onnxruntime-only operators and are refused.

Static shapes make each engine's execution replayable: after a warm-up the enqueue is captured
in a CUDA graph and every frame is one graph launch (plus copies into the static input buffers).
The image embeddings stay on the GPU between the vision and the prefix engines.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.policy.manifest import ExportManifest, GraphEntry
from vla_ros.policy.trunk import BackendError, GraphTrunk

ENGINE_DIR = "trt"
WORKSPACE_BYTES = 4 << 30
_LOG = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(
            "backend tensorrt needs the TensorRT Python module (JetPack: python3-libnvinfer, "
            f"part of the Jetson image; x86: the tensorrt wheel matching your CUDA): {exc}"
        ) from exc
    return tensorrt


@dataclass(frozen=True)
class EngineKey:
    """What an engine is tied to: the graph, the precision, TensorRT and the GPU."""

    graph_sha256: str
    precision: str
    tensorrt: str
    gpu: str
    compute_capability: str

    def file_name(self, graph: str) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{Path(graph).stem}.{self.precision}.sm{self.compute_capability}.{digest[:16]}.plan"


def engine_problem(record: dict[str, Any], expected: EngineKey) -> str | None:
    """Why an engine recorded as `record` cannot run for `expected`, or None when it can."""
    for field, what in (
        ("tensorrt", "TensorRT"),
        ("gpu", "GPU"),
        ("compute_capability", "compute capability"),
        ("graph_sha256", "ONNX graph"),
        ("precision", "precision"),
    ):
        built, here = record.get(field), getattr(expected, field)
        if built != here:
            return f"engine built for {what} {built!r}, this machine needs {here!r}"
    return None


@dataclass(frozen=True)
class BuildPlan:
    """How to build one export's engines (pure, so it is tested without a GPU)."""

    strongly_typed: bool
    flags: tuple[str, ...]
    fp32_layers: bool


def build_plan(manifest: ExportManifest) -> BuildPlan:
    """The TensorRT builder settings for the export's precision; BackendError if unbuildable."""
    precision = manifest.precision
    if precision == "fp32":
        return BuildPlan(strongly_typed=False, flags=("TF32",), fp32_layers=False)
    if precision == "fp16":
        return BuildPlan(strongly_typed=True, flags=(), fp32_layers=False)
    if precision == "bf16":
        return BuildPlan(strongly_typed=False, flags=("BF16",), fp32_layers=True)
    mode = manifest.quantization.get("mode")
    if mode != "static-qdq":
        raise BackendError(
            f"this INT8 export is {mode!r}: its operators (MatMulInteger) run in onnxruntime "
            "only. For TensorRT re-export with `--precision int8 --calibration BAG` (QDQ)"
        )
    return BuildPlan(strongly_typed=True, flags=(), fp32_layers=False)


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability 'MAJORMINOR') of a CUDA device."""
    index = device.index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}{minor}"


class _Engine:
    """A deserialized engine, its static I/O buffers (torch CUDA tensors) and a CUDA graph."""

    def __init__(self, trt: Any, engine: Any, stream: torch.cuda.Stream, shared: dict) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        self.stream = stream
        self.buffers: dict[str, torch.Tensor] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name))))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            buffer = shared.get(name) if is_input else None
            if buffer is None:
                buffer = torch.empty(shape, dtype=dtype.dtype, device="cuda")
            self.buffers[name] = buffer
            self.context.set_tensor_address(name, buffer.data_ptr())
        self.graph: torch.cuda.CUDAGraph | None = None

    def run(self) -> None:
        if self.graph is None:
            with torch.cuda.stream(self.stream):
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed")
            self.stream.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
        self.graph.replay()


class TrtTrunk(GraphTrunk):
    """Vision + prefix engines with CUDA-graph replay."""

    backend = "tensorrt"

    def __init__(
        self,
        model_dir: str | Path,
        onnx_dir: Path,
        manifest: ExportManifest,
        device: torch.device,
        action_token: torch.Tensor,
        engine_dir: Path,
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
        self.trt = import_tensorrt()
        self.onnx_dir, self.manifest, self.engine_dir = onnx_dir, manifest, engine_dir
        self.plan = build_plan(manifest)
        gpu, capability = gpu_identity(device)
        self._key = {
            "precision": manifest.precision,
            "tensorrt": self.trt.__version__,
            "gpu": gpu,
            "compute_capability": capability,
        }
        self._logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._runtime = self.trt.Runtime(self._logger)
        self._stream = torch.cuda.Stream(device)
        with torch.cuda.device(device):
            self._vision = _Engine(self.trt, self._engine(manifest.vision), self._stream, {})
            shared = {"image_embeds": self._vision.buffers["image_embeds"]}
            self._prefix = {
                entry.text_len: _Engine(self.trt, self._engine(entry), self._stream, shared)
                for entry in manifest.prefix
            }

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        onnx_dir: str | Path,
        device: torch.device,
        action_token: torch.Tensor,
        engine_dir: str | Path | None = None,
    ) -> TrtTrunk:
        """Check the export, then deserialize (or build and cache) every engine."""
        import_tensorrt()
        if device.type != "cuda":
            raise BackendError(f"backend tensorrt runs on a CUDA device (cuda:N), not {device}")
        onnx_dir = Path(onnx_dir)
        manifest = ExportManifest.load(onnx_dir)
        manifest.verify(onnx_dir, model_dir)
        build_plan(manifest)
        engines = Path(engine_dir) if engine_dir is not None else onnx_dir / ENGINE_DIR
        return cls(model_dir, onnx_dir, manifest, device, action_token, engines)

    def _engine(self, entry: GraphEntry) -> Any:
        key = EngineKey(graph_sha256=entry.sha256, **self._key)
        plan = self.engine_dir / key.file_name(entry.file)
        record_path = plan.with_suffix(".json")
        if not plan.is_file():
            self._build(entry, plan, key)
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BackendError(
                f"{record_path}: engine record unreadable ({exc}); delete {plan}"
            ) from exc
        problem = engine_problem(record, key)
        if problem:
            raise BackendError(f"{plan}: {problem}. Delete it to rebuild")
        engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise BackendError(
                f"{plan}: TensorRT {self.trt.__version__} cannot deserialize this engine (built "
                f"by another TensorRT version or GPU?). Delete it to rebuild"
            )
        return engine

    def _build(self, entry: GraphEntry, plan: Path, key: EngineKey) -> None:
        trt = self.trt
        _LOG.warning("building TensorRT engine %s (minutes for the 3B model; cached)", plan.name)
        flags = 0
        if self.plan.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        builder = trt.Builder(self._logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(self.onnx_dir / entry.file)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {entry.file}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        for flag in self.plan.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if self.plan.fp32_layers:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            keep = {trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX, trt.LayerType.REDUCE}
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.type in keep:
                    layer.precision = trt.float32
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"TensorRT failed to build an engine for {entry.file}")
        try:
            self.engine_dir.mkdir(parents=True, exist_ok=True)
            plan.write_bytes(bytes(serialized))
            record = {**asdict(key), "graph": entry.file}
            plan.with_suffix(".json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        except OSError as exc:
            raise BackendError(
                f"cannot write the engine cache {self.engine_dir} ({exc}); make it writable or "
                "build the engines once where it is"
            ) from exc

    def vision(self, pixel_values: np.ndarray) -> Any:
        buffer = self._vision.buffers["pixel_values"]
        with torch.cuda.stream(self._stream):
            buffer.copy_(torch.from_numpy(pixel_values), non_blocking=False)
            self._vision.run()
        return self._vision.buffers["image_embeds"]

    def prefix(
        self, bucket: int, image_embeds: Any, text: np.ndarray, act_index: np.ndarray
    ) -> np.ndarray:
        engine = self._prefix[bucket]
        with torch.cuda.stream(self._stream):
            engine.buffers["text_embeds"].copy_(torch.from_numpy(text))
            engine.buffers["act_index"].copy_(torch.from_numpy(act_index))
            engine.run()
            feature = engine.buffers["feature"].to("cpu", torch.float32)
        self._stream.synchronize()
        return feature.numpy()
