"""`vla-ros export`: the trunk as two static-shape ONNX graphs, verified against torch.

Exporting the whole `PaliGemmaForConditionalGeneration` fails (`aten._is_all_true` in its
image-token check), and would carry the 257k-vocab LM head. We export our own split modules:

- `vision.onnx`: pixel_values (1, 3, S, S) -> image_embeds (1, 256, d): SigLIP + projector,
  divided by sqrt(d) exactly as `PaliGemmaBackbone.encode_image` does.
- `prefix_tN.onnx`, one per text bucket N: image_embeds (1, 256, d), text_embeds (1, N, d)
  (`<eos>`, instruction, ACT, `\\n`, zero padding: unscaled table rows) and act_index (1,) ->
  feature (1, d), the final-norm hidden state at ACT. The graph lays out
  `[<eos>][image][instruction][ACT][\\n][pad]`, multiplies the whole sequence by sqrt(d) once
  (transformers 4.44's Gemma normalizer, as the torch trunk does), applies an explicit causal mask
  (a constant: no data-dependent mask code) and 1-based positions. Padding sits after ACT, so
  under causal attention it cannot change the feature.

All prefix graphs read one weight file (`prefix.data`, ONNX external data): the decoder weights
are stored once whatever the number of buckets, and no graph file exceeds protobuf's 2 GB.
Before `manifest.json` is written, onnxruntime runs the graphs through the real `onnxruntime`
backend and the result is compared with the torch policy on the same frames (ACT-feature cosine,
action max |delta|, gripper decisions). INT8 (onnxruntime static QDQ with calibration frames from a
bag, or dynamic without one) is accepted only if it passes `Int8Gate` on held-out frames.

Memory (3B): the torch model is loaded once in the export dtype (fp32: ~12 GB), each graph is
written straight to external data, the torch references are computed before the model is freed,
and only then are onnxruntime sessions opened.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vla_ros.policy.calibration import Sample, calibration_samples
from vla_ros.policy.manifest import PRECISIONS, ExportManifest, GraphEntry, sha256_file
from vla_ros.policy.trunk import DEFAULT_ONNX_DIR

OPSET = 18
"""Opset 18: read by onnxruntime >= 1.14 (the Jetson image pins 1.22) and TensorRT 10's parser."""
DEFAULT_TEXT_BUCKETS = (16, 32, 64)
"""Text rows (tokens + ACT) per prefix graph; a typical instruction needs ~10-25."""
MAX_BUCKET = 257
FP32_MIN_COSINE = 0.9999
HALF_MIN_COSINE = 0.99
PARITY_INSTRUCTIONS = ("go to the red box", "빨간 상자를 피해서 왼쪽으로 가")
PARITY_FRAMES = 4

_LOG = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The export ran but its result is not good enough (parity or the INT8 gate); no manifest."""


@dataclass(frozen=True)
class Int8Gate:
    """Acceptance of an INT8 export on held-out frames, against the fp32 torch policy.

    NRMSE = RMS of the normalized action difference / 2 (the width of the [-1, 1] range the
    head's Tanh outputs span), so 0.02 means the actions differ by 2 % of their range, RMS.
    """

    min_cosine: float = 0.99
    max_nrmse: float = 0.02


class VisionGraph(nn.Module):
    """pixel_values -> image embeddings / sqrt(d): `encode_image` of the torch trunk."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(pixel_values)


class PrefixGraph(nn.Module):
    """(image_embeds, text_embeds, act_index) -> the final-norm ACT feature (1, d)."""

    def __init__(self, backbone: Any, text_len: int) -> None:
        super().__init__()
        self.language_model = backbone.language_model
        self.hidden_size = backbone.hidden_size
        length = 1 + backbone.num_image_tokens + text_len - 1
        dtype = backbone.dtype
        blocked = torch.ones(length, length, dtype=torch.bool).triu(1)
        mask = torch.zeros(length, length, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)
        self.register_buffer("causal_mask", mask[None, None], persistent=False)
        # 1-based like PaliGemmaBackbone.decode.
        self.register_buffer("position_ids", torch.arange(1, length + 1)[None], persistent=False)

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, act_index: torch.Tensor
    ) -> torch.Tensor:
        dtype = text_embeds.dtype
        sequence = torch.cat([text_embeds[:, :1], image_embeds.to(dtype), text_embeds[:, 1:]], 1)
        sequence = sequence * torch.tensor(self.hidden_size**0.5, dtype=dtype)
        hidden = self.language_model(
            inputs_embeds=sequence,
            attention_mask=self.causal_mask,
            position_ids=self.position_ids,
            use_cache=False,
        ).last_hidden_state
        return torch.index_select(hidden[0], 0, act_index)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and the quantizer print progress lines and advice to the root logger; keep
    the CLI's output to what it reports (errors still raise)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _export(
    module: nn.Module, args: tuple[Any, ...], inputs: list[str], path: Path, opset: int
) -> None:
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            opset_version=opset,
            input_names=inputs,
            output_names=["image_embeds" if len(inputs) == 1 else "feature"],
            external_data=True,
            optimize=True,
            verbose=False,
        )
        if program is None:
            raise ExportError(f"torch.onnx.export returned nothing for {path.name}")
        program.save(str(path), external_data=True)


def pack_external_data(graphs: Sequence[Path], out_dir: Path, data_name: str) -> list[Path]:
    """Copy `graphs` into `out_dir` with their weights in one shared external-data file.

    Storage is content-addressed: a tensor whose bytes are already stored (the decoder weights
    of every text bucket) is stored once; each graph's initializers point at offsets of
    `data_name`.
    Tensors are copied one at a time, so memory stays at one tensor whatever the model size.
    """
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    stored: dict[str, tuple[int, int]] = {}
    written: list[Path] = []
    data_path = out_dir / data_name
    with open(data_path, "wb") as data:
        for graph in graphs:
            model = onnx.load(str(graph), load_external_data=False)
            for tensor in _all_tensors(model):
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    info = ExternalDataInfo(tensor)
                    with open(graph.parent / info.location, "rb") as source:
                        source.seek(info.offset or 0)
                        raw = source.read(info.length) if info.length else source.read()
                elif tensor.HasField("raw_data") and len(tensor.raw_data) >= 1024:
                    raw = tensor.raw_data
                else:
                    continue
                key = hashlib.sha256(raw).hexdigest()
                if key not in stored:
                    padding = (-data.tell()) % 64
                    data.write(b"\0" * padding)
                    stored[key] = (data.tell(), len(raw))
                    data.write(raw)
                offset, length = stored[key]
                tensor.ClearField("raw_data")
                del tensor.external_data[:]
                tensor.data_location = onnx.TensorProto.EXTERNAL
                for name, value in (
                    ("location", data_name),
                    ("offset", str(offset)),
                    ("length", str(length)),
                ):
                    entry = tensor.external_data.add()
                    entry.key, entry.value = name, value
            target = out_dir / graph.name
            onnx.save_model(model, str(target))
            written.append(target)
    return written


def _all_tensors(model: Any) -> Iterator[Any]:
    """Initializers and Constant-node tensors of the graph and its subgraphs."""
    from onnx.external_data_helper import _get_all_tensors

    yield from _get_all_tensors(model)


def graph_entry(path: Path, text_len: int = 0) -> GraphEntry:
    """Manifest entry of a written graph: checksum, static shapes and dtypes, weight file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for value in values:
            tensor_type = value.type.tensor_type
            dims = [
                d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in tensor_type.shape.dim
            ]
            out[value.name] = {
                "shape": dims,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name,
            }
        return out

    locations = {
        entry.value
        for tensor in _all_tensors(model)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    data = sorted(locations)[0] if locations else ""
    if len(locations) > 1:
        raise ExportError(f"{path.name}: weights spread over {sorted(locations)}")
    return GraphEntry(
        file=path.name,
        sha256=sha256_file(path),
        inputs=describe(model.graph.input),
        outputs=describe(model.graph.output),
        data=data,
        data_bytes=(path.parent / data).stat().st_size if data else 0,
        text_len=text_len,
    )


def parity_frames(size: int, count: int = PARITY_FRAMES, seed: int = 7) -> list[np.ndarray]:
    """Deterministic test frames: noise, gradients and blocks (no camera needed)."""
    rng = np.random.default_rng(seed)
    frames = []
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for k in range(count):
        if k % 3 == 0:
            frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif k % 3 == 1:
            frame = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1)] * 2, -1)
            frame = frame[..., :3].astype(np.uint8)
        else:
            frame = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            frame[y : y + size // 3, x : x + size // 3] = rng.integers(0, 256, 3)
        frames.append(frame)
    return frames


@dataclass(frozen=True)
class RunResult:
    """One pass of a policy over samples: per-step features, normalized motion, gripper, and the
    trunk time of each step (preprocess + vision + decoder, as `VLAPolicy.step` measures it)."""

    features: np.ndarray
    motion: np.ndarray
    gripper: np.ndarray | None
    trunk_ms: list[float]


def run_policy(policy: Any, samples: Sequence[Sample]) -> RunResult:
    """Step `policy` over `samples` from a reset; what parity and the gate compare."""
    policy.reset()
    features, motions, grippers, trunk_ms = [], [], [], []
    for sample in samples:
        chunk = policy.step(sample.frame, sample.instruction)
        trunk_ms.append(sum(chunk.timings_ms[k] for k in ("preprocess", "vision", "decoder")))
        features.append(policy.features[-1].detach().to("cpu", torch.float32).numpy())
        motions.append(policy.codec.encode_motion(chunk.motion))
        if chunk.gripper is not None:
            grippers.append(np.asarray(chunk.gripper))
    policy.reset()
    return RunResult(
        features=np.stack(features),
        motion=np.stack(motions),
        gripper=np.stack(grippers) if grippers else None,
        trunk_ms=trunk_ms,
    )


def compare(reference: RunResult, candidate: RunResult, action_scale: float = 1.0) -> dict:
    """ACT-feature cosine (min over frames), max |delta| of features and normalized actions,
    action NRMSE (RMS / 2, see Int8Gate), and whether every gripper decision agrees."""
    ref, cand = reference.features.astype(np.float64), candidate.features.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-30)
    delta = candidate.motion.astype(np.float64) - reference.motion.astype(np.float64)
    result = {
        "frames": len(ref),
        "cosine_min": float(cosine.min()),
        "feature_max_abs": float(np.abs(ref - cand).max()),
        "action_max_abs": float(np.abs(delta).max() * action_scale),
        "action_nrmse": float(np.sqrt(np.mean(delta**2)) / 2.0),
        "gripper_agree": None,
    }
    if reference.gripper is not None and candidate.gripper is not None:
        result["gripper_agree"] = bool(np.array_equal(reference.gripper, candidate.gripper))
    return result


def default_samples(size: int, backbone: Any, max_rows: int) -> list[Sample]:
    """Parity frames with English and Korean instructions, shortened to fit the buckets."""
    instructions = []
    for text in PARITY_INSTRUCTIONS:
        words = text.split()
        while len(words) > 1 and len(backbone.text_ids(" ".join(words))) + 1 > max_rows:
            words.pop()
        instructions.append(" ".join(words))
    frames = parity_frames(size)
    return [Sample(frame, instructions[k % len(instructions)]) for k, frame in enumerate(frames)]


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    precision: str = "fp32",
    calibration: str | Path | None = None,
    text_buckets: Sequence[int] = DEFAULT_TEXT_BUCKETS,
    opset: int = OPSET,
    gate: Int8Gate | None = None,
    samples: Sequence[Sample] | None = None,
) -> ExportManifest:
    """Export, verify and write `out_dir` (default MODEL_DIR/onnx); returns the manifest.

    A failed parity check or INT8 gate raises ExportError naming the numbers and leaves any
    earlier export in `out_dir` untouched.
    """
    from vla_ros.policy.model import VLAPolicy, check_model_dir

    path = check_model_dir(model_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    buckets = tuple(sorted(set(int(b) for b in text_buckets)))
    if not buckets or any(b < 3 or b > MAX_BUCKET for b in buckets):
        raise ValueError(f"text buckets must be between 3 and {MAX_BUCKET}, got {list(buckets)}")
    if calibration is not None and precision != "int8":
        raise ValueError("--calibration is only used with --precision int8")
    out = Path(out_dir) if out_dir is not None else path / DEFAULT_ONNX_DIR
    gate = gate or Int8Gate()
    from vla_ros.policy.manifest import source_hash

    source = source_hash(path)
    # bf16 graphs stay fp32 in ONNX (opset 18 has no bf16 Conv): TensorRT builds them in bf16.
    torch_dtype = torch.float16 if precision == "fp16" else torch.float32
    reference_policy = VLAPolicy.from_pretrained(path, dtype=torch.float32)
    size = reference_policy.backbone.image_size
    if calibration is not None:
        calib, held_out = calibration_samples(calibration, size)
    else:
        calib, held_out = (
            [],
            list(samples or default_samples(size, reference_policy.backbone, max(buckets))),
        )
    rows = max(buckets)
    check_samples = (
        list(samples or default_samples(size, reference_policy.backbone, rows))
        if precision != "int8"
        else held_out
    )
    reference = run_policy(reference_policy, check_samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        raw = work / "raw"
        raw.mkdir()
        policy = reference_policy
        if torch_dtype != torch.float32:
            del reference_policy
            gc.collect()
            policy = VLAPolicy.from_pretrained(path, dtype=torch_dtype)
        _export_graphs(policy.backbone, raw, buckets, opset)
        del policy
        reference_policy = None
        gc.collect()
        staged = work / "staged"
        staged.mkdir()
        quantization: dict[str, Any] = {}
        graphs = [raw / "vision.onnx", *(raw / f"prefix_t{b}.onnx" for b in buckets)]
        if precision == "int8":
            graphs, quantization = _quantize(graphs, work / "int8", path, calib)
        packed = pack_external_data(graphs[:1], staged, "vision.data")
        packed += pack_external_data(graphs[1:], staged, "prefix.data")
        manifest = _manifest(path, staged, packed, buckets, precision, opset, source)
        manifest = replace(manifest, quantization=quantization)
        manifest.save(staged)
        candidate = run_policy(
            VLAPolicy.from_pretrained(path, backend="onnxruntime", onnx_dir=staged),
            check_samples,
        )
        parity = compare(reference, candidate)
        _accept(parity, precision, gate)
        manifest = replace(manifest, parity=parity)
        manifest.save(staged)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_graphs(backbone: Any, raw: Path, buckets: tuple[int, ...], opset: int) -> None:
    size, dtype, d = backbone.image_size, backbone.dtype, backbone.hidden_size
    pixels = torch.zeros(1, 3, size, size, dtype=dtype)
    _export(VisionGraph(backbone), (pixels,), ["pixel_values"], raw / "vision.onnx", opset)
    image = torch.zeros(1, backbone.num_image_tokens, d, dtype=dtype)
    for bucket in buckets:
        text = torch.zeros(1, bucket, d, dtype=dtype)
        act = torch.tensor([backbone.num_image_tokens + 1], dtype=torch.long)
        inputs = ["image_embeds", "text_embeds", "act_index"]
        _export(
            PrefixGraph(backbone, bucket),
            (image, text, act),
            inputs,
            raw / f"prefix_t{bucket}.onnx",
            opset,
        )


def _manifest(
    model_dir: Path,
    staged: Path,
    packed: list[Path],
    buckets: tuple[int, ...],
    precision: str,
    opset: int,
    source: dict[str, Any],
) -> ExportManifest:
    import onnx
    import onnxruntime
    import transformers

    from vla_ros.policy.backbone import ImagePreprocessing
    from vla_ros.policy.config import PolicyConfig

    vision = graph_entry(packed[0])
    config = PolicyConfig.load(model_dir)
    image_size = ImagePreprocessing.from_file(model_dir / "preprocessor_config.json").size
    return ExportManifest(
        precision=precision,
        opset=opset,
        hidden_size=config.hidden_size,
        num_image_tokens=int(vision.outputs["image_embeds"]["shape"][1]),
        image_size=image_size,
        source=source,
        vision=vision,
        prefix=tuple(graph_entry(p, b) for p, b in zip(packed[1:], buckets, strict=True)),
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )


def _accept(parity: dict, precision: str, gate: Int8Gate) -> None:
    """Raise ExportError naming the numbers when the export is not close enough to torch."""
    numbers = (
        f"ACT cosine min {parity['cosine_min']:.6f}, action NRMSE {parity['action_nrmse']:.5f}, "
        f"action max |delta| {parity['action_max_abs']:.3g}, gripper decisions "
        f"{'identical' if parity['gripper_agree'] in (True, None) else 'DIFFER'} over "
        f"{parity['frames']} frames"
    )
    if precision == "int8":
        if parity["cosine_min"] < gate.min_cosine or parity["action_nrmse"] > gate.max_nrmse:
            raise ExportError(
                f"INT8 rejected by the accuracy gate: {numbers} (needs cosine >= "
                f"{gate.min_cosine} and NRMSE <= {gate.max_nrmse}); export fp32 instead"
            )
        return
    floor = FP32_MIN_COSINE if precision == "fp32" else HALF_MIN_COSINE
    if parity["cosine_min"] < floor or parity["gripper_agree"] is False:
        raise ExportError(f"{precision} graphs do not match torch: {numbers} (needs >= {floor})")


def _quantize(
    graphs: list[Path],
    work: Path,
    model_dir: Path,
    calib: Sequence[Sample],
) -> tuple[list[Path], dict[str, Any]]:
    """INT8 graphs: static QDQ (symmetric, per-channel: TensorRT's explicit quantization) when
    calibration samples exist, else dynamic (weights int8, activations quantized at run time)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    work.mkdir()
    out: list[Path] = []
    if not calib:
        for graph in graphs:
            target = work / graph.name
            with _quiet():
                quantize_dynamic(
                    str(graph),
                    str(target),
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=True,
                    use_external_data_format=True,
                )
            out.append(target)
        return out, {"mode": "dynamic", "weights": "int8 per-channel", "calibration_frames": 0}
    readers = _calibration_feeds(model_dir, graphs, calib)
    for graph, feeds in zip(graphs, readers, strict=True):
        target = work / graph.name
        with _quiet():
            quantize_static(
                str(graph),
                str(target),
                _FeedReader(feeds),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                per_channel=True,
                use_external_data_format=True,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
        out.append(target)
    return out, {
        "mode": "static-qdq",
        "weights": "int8 per-channel symmetric",
        "activations": "int8 symmetric",
        "calibration_frames": len(calib),
    }


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _calibration_feeds(
    model_dir: Path,
    graphs: list[Path],
    calib: Sequence[Sample],
) -> list[list[dict[str, np.ndarray]]]:
    """Inputs of each fp32 graph for the calibration samples (image embeddings from the fp32
    vision graph; each instruction padded into every bucket)."""
    import onnxruntime

    from vla_ros.policy.config import HEAD_FILE, PolicyConfig
    from vla_ros.policy.head import LSTMPolicyHead, load_head_weights
    from vla_ros.policy.trunk import GraphTrunk

    config = PolicyConfig.load(model_dir)
    token = load_head_weights(model_dir / HEAD_FILE, LSTMPolicyHead.from_config(config))
    vision = onnxruntime.InferenceSession(str(graphs[0]), providers=["CPUExecutionProvider"])
    image_tokens = vision.get_outputs()[0].shape[1]
    buckets = [int(g.stem.split("_t")[1]) for g in graphs[1:]]
    front = GraphTrunk(
        model_dir, config.hidden_size, image_tokens, tuple(buckets), token, torch.device("cpu")
    )
    vision_feeds, prefix_feeds = [], [[] for _ in buckets]
    for sample in calib:
        pixels = front.preprocess(sample.frame)
        vision_feeds.append({"pixel_values": pixels})
        embeds = vision.run(None, {"pixel_values": pixels})[0]
        ids = front.text_ids(sample.instruction)
        for k, bucket in enumerate(buckets):
            # An instruction longer than a bucket calibrates it with its first tokens.
            fitted = ids if len(ids) < bucket else (*ids[: bucket - 2], ids[-1])
            _, text, act = front.text_inputs(fitted)
            padded = np.zeros((1, bucket, text.shape[2]), dtype=np.float32)
            padded[:, : text.shape[1]] = text[:, :bucket]
            prefix_feeds[k].append(
                {"image_embeds": embeds, "text_embeds": padded, "act_index": act}
            )
    return [vision_feeds, *prefix_feeds]


def manifest_summary(manifest: ExportManifest) -> list[tuple[str, str]]:
    """Rows the CLI prints after a successful export."""
    parity = manifest.parity
    mode = manifest.quantization.get("mode")
    vision = manifest.vision
    gripper = {True: "identical", False: "DIFFER", None: "n/a (no gripper)"}
    return [
        ("precision", manifest.precision + (f" ({mode})" if mode else "")),
        ("opset", str(manifest.opset)),
        (
            "vision",
            f"{vision.file}: pixel_values {vision.inputs['pixel_values']['shape']} -> "
            f"image_embeds {vision.outputs['image_embeds']['shape']}",
        ),
        ("prefix text buckets", ", ".join(str(b) for b in manifest.buckets)),
        ("ACT cosine (min)", f"{parity.get('cosine_min', math.nan):.7f}"),
        ("feature max |delta|", f"{parity.get('feature_max_abs', math.nan):.3g}"),
        ("action max |delta|", f"{parity.get('action_max_abs', math.nan):.3g} (normalized)"),
        ("action NRMSE", f"{parity.get('action_nrmse', math.nan):.3g}"),
        ("gripper decisions", gripper[parity.get("gripper_agree")]),
        ("parity frames", str(parity.get("frames", 0))),
        ("source sha256", manifest.source["sha256"][:16]),
    ]
