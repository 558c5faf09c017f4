"""Trunk backends: ONNX export contract, onnxruntime parity with torch, INT8 gate, refusals.

Every export here is of the real tiny PaliGemma (same transformers classes as the 3B model) and
is checked by running the graphs in onnxruntime through `VLAPolicy`, as the node runs them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.cli import main
from vla_ros.policy.manifest import MANIFEST_FILE, ExportManifest, StaleExportError
from vla_ros.policy.model import VLAPolicy
from vla_ros.policy.onnx_export import (
    OPSET,
    ExportError,
    Int8Gate,
    Sample,
    compare,
    export_onnx,
    run_policy,
)
from vla_ros.policy.ort_backend import providers_for
from vla_ros.policy.trt_backend import EngineKey, build_plan, engine_problem
from vla_ros.policy.trunk import BackendError, choose_bucket

pytestmark = pytest.mark.usefixtures("torch_one_thread")

BUCKETS = "16,32"
# Ops TensorRT 10's ONNX parser imports (the subset our graphs may use); a new op in an export
# must be checked against TensorRT's operator support before it is added here.
TENSORRT_OPS = {
    "Add", "Cast", "Concat", "Constant", "Conv", "Cos", "DequantizeLinear", "Div", "Erf",
    "LayerNormalization",
    "Expand", "Gather", "Gemm", "Identity", "MatMul", "Mul", "Neg", "Pow", "QuantizeLinear",
    "Reciprocal", "ReduceMean", "Reshape", "Shape", "Sin", "Slice", "Softmax", "Sqrt", "Sub",
    "Tanh", "Transpose", "Unsqueeze", "Where",
}  # fmt: skip


def frames(count: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def arm_model(tiny_arm_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny arm7 model (it has a gripper) that gets an export."""
    return copy_model(tiny_arm_model_dir, tmp_path_factory.mktemp("export") / "arm")


@pytest.fixture(scope="module")
def arm_export(arm_model) -> Path:
    """fp32 export into MODEL_DIR/onnx, made through the CLI as a user would."""
    assert main(["export", str(arm_model), "--text-buckets", BUCKETS]) == 0
    return arm_model / "onnx"


@pytest.fixture(scope="module")
def ort_arm(arm_model, arm_export) -> VLAPolicy:
    return VLAPolicy.from_pretrained(arm_model, backend="onnxruntime")


@pytest.fixture(scope="module")
def torch_arm(arm_model) -> VLAPolicy:
    return VLAPolicy.from_pretrained(arm_model)


def external_refs(graph: Path) -> dict[str, tuple[str, ...]]:
    """Initializer name -> (file, offset, length) of its external data."""
    model = onnx.load(str(graph), load_external_data=False)
    return {
        init.name: tuple(entry.value for entry in init.external_data)
        for init in model.graph.initializer
        if init.external_data
    }


def copy_model(model_dir: Path, target: Path) -> Path:
    shutil.copytree(model_dir, target)
    return target


# --- export contract (what onnxruntime and TensorRT consume) ---------------------------------


def test_export_writes_static_graphs_with_checksums_and_verified_parity(arm_export):
    manifest = ExportManifest.load(arm_export)
    assert manifest.opset == OPSET <= 18
    assert manifest.precision == "fp32"
    assert manifest.buckets == (16, 32)
    assert manifest.vision.inputs == {
        "pixel_values": {"shape": [1, 3, 224, 224], "dtype": "float32"}
    }
    assert manifest.vision.outputs["image_embeds"]["shape"] == [1, 256, 64]
    for entry in manifest.prefix:
        assert entry.inputs["text_embeds"]["shape"] == [1, entry.text_len, 64]
        assert entry.inputs["image_embeds"]["shape"] == [1, 256, 64]
        assert entry.inputs["act_index"] == {"shape": [1], "dtype": "int64"}
        assert entry.outputs == {"feature": {"shape": [1, 64], "dtype": "float32"}}
        assert entry.data == "prefix.data"
    # The decoder weights are stored once for all buckets: both graphs point at the same bytes.
    short, long = (external_refs(arm_export / f"prefix_t{b}.onnx") for b in (16, 32))
    shared = set(short.values()) & set(long.values())
    decoder = VLAPolicy.from_pretrained(arm_export.parent).backbone.language_model
    weight_bytes = sum(
        p.numel() * 4
        for name, p in decoder.named_parameters()
        if "embed_tokens" not in name and p.numel() * 4 >= 1024
    )
    assert sum(int(ref[2]) for ref in shared) >= weight_bytes
    parity = manifest.parity
    assert parity["cosine_min"] >= 0.9999
    assert parity["gripper_agree"] is True
    assert parity["action_max_abs"] < 1e-4
    assert len(manifest.source["sha256"]) == 64
    assert set(manifest.source["files"]) == {"config.json", "model.safetensors"}


def test_graphs_use_only_static_shapes_and_operators_tensorrt_imports(arm_export):
    for path in sorted(arm_export.glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        assert max(o.version for o in model.opset_import) <= 18
        for value in (*model.graph.input, *model.graph.output):
            dims = value.type.tensor_type.shape.dim
            assert all(d.HasField("dim_value") for d in dims), f"{path.name}: {value.name}"
        ops = {node.op_type for node in model.graph.node}
        assert ops <= TENSORRT_OPS, f"{path.name}: {sorted(ops - TENSORRT_OPS)}"


def test_prefix_graph_is_causal_and_ignores_padding(ort_arm):
    trunk = ort_arm.backbone
    ids = trunk.text_ids("pick up the red cup")
    bucket, text, act = trunk.text_inputs(ids)
    pixels = trunk.preprocess(frames(1)[0])
    embeds = trunk.vision(pixels)
    base = trunk.prefix(bucket, embeds, text, act)
    later = text.copy()
    later[0, len(ids) :] = np.random.default_rng(0).normal(size=later[0, len(ids) :].shape)
    np.testing.assert_array_equal(trunk.prefix(bucket, embeds, later, act), base)
    earlier = text.copy()
    earlier[0, 1] = 10 * np.random.default_rng(1).normal(size=earlier.shape[2])
    assert np.abs(trunk.prefix(bucket, embeds, earlier, act) - base).max() > 1e-5


# --- onnxruntime backend vs torch ------------------------------------------------------------


def test_onnxruntime_policy_matches_torch_across_the_window_and_languages(torch_arm, ort_arm):
    instructions = ["pick up the red cup", "빨간 컵을 집어서 그릇에 넣어"]
    samples = [Sample(f, instructions[k // 6]) for k, f in enumerate(frames(12))]
    reference, candidate = run_policy(torch_arm, samples), run_policy(ort_arm, samples)
    result = compare(reference, candidate)
    assert result["cosine_min"] >= 0.9999
    assert result["gripper_agree"] is True
    assert result["action_max_abs"] < 1e-4
    assert ort_arm.spec == torch_arm.spec
    assert ort_arm.backbone.backend == "onnxruntime"


def test_every_instruction_length_lands_in_a_bucket_or_is_refused(ort_arm):
    trunk = ort_arm.backbone
    chunk = ort_arm.step(frames(1)[0], "go")
    assert chunk.motion.shape == (ort_arm.spec.chunk, 6)
    with pytest.raises(ValueError, match="at most 32"):
        ort_arm.step(frames(1)[0], " ".join(["drawer"] * 40))
    assert trunk.text_inputs(trunk.text_ids("go"))[0] == 16


@given(rows=st.integers(1, 300), buckets=st.sets(st.integers(3, 257), min_size=1, max_size=5))
def test_choose_bucket_picks_the_smallest_that_fits(rows, buckets):
    buckets = tuple(buckets)
    if rows > max(buckets):
        with pytest.raises(ValueError, match="text-buckets"):
            choose_bucket(rows, buckets)
    else:
        chosen = choose_bucket(rows, buckets)
        assert chosen >= rows
        assert all(b < rows or b >= chosen for b in buckets)


# --- refusals --------------------------------------------------------------------------------


def test_stale_onnx_next_to_changed_weights_is_refused(arm_model, arm_export, tmp_path):
    from safetensors.torch import load_file, save_file

    model = copy_model(arm_model, tmp_path / "model")
    weights = load_file(str(model / "model.safetensors"))
    key = next(k for k in weights if k.endswith("norm.weight"))
    weights[key] = weights[key] + 0.01
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(StaleExportError, match=r"stale.*model\.safetensors.*vla-ros export"):
        VLAPolicy.from_pretrained(model, backend="onnxruntime")


def test_missing_or_altered_export_files_are_named(arm_model, arm_export, tmp_path):
    model = copy_model(arm_model, tmp_path / "model")
    (model / "onnx" / "prefix.data").unlink()
    with pytest.raises(FileNotFoundError, match=r"prefix\.data"):
        VLAPolicy.from_pretrained(model, backend="onnxruntime")
    with open(model / "onnx" / "vision.onnx", "ab") as graph:
        graph.write(b"\0")
    with pytest.raises(ValueError, match=r"vision\.onnx: checksum"):
        VLAPolicy.from_pretrained(model, backend="onnxruntime")
    shutil.rmtree(model / "onnx")
    with pytest.raises(FileNotFoundError, match="vla-ros export"):
        VLAPolicy.from_pretrained(model, backend="onnxruntime")
    (model / "onnx").mkdir()
    (model / "onnx" / MANIFEST_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a valid export manifest"):
        VLAPolicy.from_pretrained(model, backend="onnxruntime")


def test_export_of_an_incomplete_model_dir_names_the_missing_file(tiny_model_dir, tmp_path, capsys):
    model = copy_model(tiny_model_dir, tmp_path / "model")
    (model / "config.json").unlink()
    assert main(["export", str(model)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    assert main(["export", str(model), "--precision", "fp32", "--calibration", "x"]) == 2
    assert not (model / "onnx").exists()


def test_unknown_or_unavailable_backends_refuse_to_load(tiny_model_dir):
    with pytest.raises(BackendError, match="backend must be one of"):
        VLAPolicy.from_pretrained(tiny_model_dir, backend="openvino")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="TensorRT Python module"):
            VLAPolicy.from_pretrained(tiny_model_dir, backend="tensorrt")
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        providers_for(torch.device("cuda:0"), ["CPUExecutionProvider"], Path("cache"))


class _CountingTrunk:
    """A toy backend: the torch trunk, counting how often it was loaded."""

    loads = 0

    @classmethod
    def load(cls, model_dir, device, dtype, action_token):
        from vla_ros.policy.backbone import PaliGemmaBackbone

        cls.loads += 1
        return PaliGemmaBackbone.load(model_dir, device, dtype, action_token)


def test_a_new_backend_is_one_registration(tiny_model_dir):
    from vla_ros.policy.backends import REGISTRY, Backend, register

    register(Backend("toy", f"{__name__}:_CountingTrunk.load", graphs=False))
    try:
        with pytest.raises(ValueError, match="registered already"):
            register(Backend("toy", f"{__name__}:_CountingTrunk.load", graphs=False))
        policy = VLAPolicy.from_pretrained(tiny_model_dir, backend="toy")
        assert _CountingTrunk.loads == 1
        reference = VLAPolicy.from_pretrained(tiny_model_dir)
        frame = np.full((64, 64, 3), 128, dtype=np.uint8)
        assert np.array_equal(
            policy.step(frame, "go left").motion, reference.step(frame, "go left").motion
        )
    finally:
        REGISTRY.pop("toy")


@pytest.mark.ros
def test_inference_node_refuses_to_start_when_its_backend_cannot_load(
    ros_context, tmp_path, tiny_model_dir
):
    from rclpy.parameter import Parameter

    from vla_ros.nodes.inference_node import InferenceNode
    from vla_ros.params import ParameterError

    model = copy_model(tiny_model_dir, tmp_path / "model")
    overrides = [
        Parameter("model_dir", value=str(model)),
        Parameter("backend", value="onnxruntime"),
    ]
    with pytest.raises(ParameterError, match=r"backend onnxruntime.*vla-ros export"):
        InferenceNode(None, context=ros_context, parameter_overrides=overrides)


# --- INT8 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibration_bag(tmp_path_factory) -> Path:
    from vla_ros.bag.synth import SynthConfig, synthesize

    out = tmp_path_factory.mktemp("bags") / "calib"
    synthesize(out, SynthConfig(duration_s=2.0))
    return out


def test_int8_static_qdq_from_a_bag_passes_the_gate_with_symmetric_scales(
    arm_model, calibration_bag, tmp_path
):
    out = tmp_path / "int8"
    manifest = export_onnx(
        arm_model, out, precision="int8", calibration=calibration_bag, text_buckets=[32]
    )
    assert manifest.quantization["mode"] == "static-qdq"
    assert manifest.quantization["calibration_frames"] >= 8
    assert manifest.parity["cosine_min"] >= 0.99
    assert manifest.parity["action_nrmse"] <= Int8Gate().max_nrmse
    assert build_plan(manifest).strongly_typed
    for path in out.glob("*.onnx"):
        model = onnx.load(str(path))
        zero_points = {
            init.name: onnx.numpy_helper.to_array(init)
            for init in model.graph.initializer
            if "zero_point" in init.name
        }
        assert zero_points, path.name
        assert all(not np.any(z) for z in zero_points.values()), "TensorRT needs zero points 0"
    policy = VLAPolicy.from_pretrained(arm_model, backend="onnxruntime", onnx_dir=out)
    assert np.isfinite(policy.step(frames(1)[0], "open the drawer").motion).all()


def test_int8_that_misses_the_gate_fails_naming_the_numbers(tiny_model_dir, tmp_path):
    out = tmp_path / "int8"
    out.mkdir()
    (out / "keep").write_text("earlier export")
    with pytest.raises(ExportError, match=r"INT8 rejected.*cosine min \d\.\d+.*NRMSE"):
        export_onnx(
            tiny_model_dir, out, precision="int8", text_buckets=[16], gate=Int8Gate(max_nrmse=0.0)
        )
    assert (out / "keep").read_text() == "earlier export"
    assert not list(tmp_path.glob(".int8-*")), "the work directory is removed"


# --- TensorRT (pure parts here; engines need a GPU) ------------------------------------------


def test_tensorrt_build_plan_per_precision(arm_export):
    manifest = ExportManifest.load(arm_export)
    assert build_plan(manifest).flags == ("TF32",)
    from dataclasses import replace

    assert build_plan(replace(manifest, precision="fp16")).strongly_typed
    bf16 = build_plan(replace(manifest, precision="bf16"))
    assert bf16.flags == ("BF16",)
    assert bf16.fp32_layers
    dynamic = replace(manifest, precision="int8", quantization={"mode": "dynamic"})
    with pytest.raises(BackendError, match="--calibration BAG"):
        build_plan(dynamic)


def test_an_engine_from_another_tensorrt_version_or_gpu_is_refused():
    here = EngineKey("ab" * 32, "bf16", "10.3.0", "Orin", "87")
    record = {**here.__dict__, "tensorrt": "8.6.2"}
    assert engine_problem(here.__dict__, here) is None
    assert engine_problem(record, here) == (
        "engine built for TensorRT '8.6.2', this machine needs '10.3.0'"
    )
    assert "GPU" in engine_problem({**here.__dict__, "gpu": "RTX 4090"}, here)
    other_version = EngineKey("ab" * 32, "bf16", "10.7.0", "Orin", "87")
    assert here.file_name("vision.onnx") != other_version.file_name("vision.onnx")
    assert here.file_name("vision.onnx").startswith("vision.bf16.sm87.")


def test_tensorrt_engines_match_onnxruntime_on_a_gpu(arm_model, arm_export, ort_arm):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (Jetson/GPU only)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: TensorRT engines cannot be built here")
    assert trt.__version__
    policy = VLAPolicy.from_pretrained(arm_model, device="cuda:0", backend="tensorrt")
    samples = [Sample(f, "pick up the red cup") for f in frames(10)]
    result = compare(run_policy(ort_arm, samples), run_policy(policy, samples))
    assert result["cosine_min"] >= 0.9999
    assert result["gripper_agree"] is True


# --- README walkthrough ----------------------------------------------------------------------


def readme_commands(title: str) -> list[list[str]]:
    """The `vla-ros` lines of the first bash block under `## title` in README.md."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block under {title}"
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [words for words in lines if words and words[0].endswith("vla-ros")]


@pytest.mark.ros
@pytest.mark.slow
def test_readme_backend_walkthrough_runs_as_written(tmp_path):
    """make-tiny-model, export, then the stack comes up on the onnxruntime backend."""
    commands = readme_commands("Inference backends")
    assert [c[1] for c in commands] == ["make-tiny-model", "export", "bringup"]
    assert commands[-1][-2:] == ["--backend", "onnxruntime"]
    executable = str(Path(sys.executable).with_name("vla-ros"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for words in commands[:-1]:
        done = subprocess.run(
            [executable, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{shlex.join(words)}\n{done.stdout}{done.stderr}"
    assert "cosine" in done.stdout
    stack = subprocess.Popen(
        [executable, *commands[-1][1:]],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(120, stack.kill)
    watchdog.start()
    seen = []
    try:
        for line in stack.stdout:
            seen.append(line)
            if "stack up" in line:
                break
        assert stack.poll() is None, "".join(seen)
        assert any("backend onnxruntime" in line or "stack up" in line for line in seen)
    finally:
        watchdog.cancel()
        stack.terminate()
        stack.communicate(timeout=30)


def test_calibration_pairs_frames_with_the_instruction_topic_only(tmp_path):
    """Other String topics (the sim's episode JSON, inference events) are not instructions."""
    from vla_ros.bag.synth import SynthConfig, synthesize
    from vla_ros.policy.calibration import FALLBACK_INSTRUCTION, calibration_samples

    spoken = ((0.0, "go to the red box"), (1.0, "빨간 상자로 가"))
    synthesize(tmp_path / "told", SynthConfig(duration_s=2.0, instructions=spoken))
    calibration, held_out = calibration_samples(tmp_path / "told", 32)
    assert {s.instruction for s in calibration + held_out} == {text for _, text in spoken}
    status = SynthConfig(duration_s=2.0, instruction_topic="/vla_sim/episode")
    synthesize(tmp_path / "status", status)
    calibration, held_out = calibration_samples(tmp_path / "status", 32)
    assert {s.instruction for s in calibration + held_out} == {FALLBACK_INSTRUCTION}
