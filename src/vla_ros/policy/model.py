"""`VLAPolicy`: the real policy behind the inference node (PaliGemma trunk + ACT + LSTM head).

One `step` = one VLM pass over the new frame (never over the history): its action-token feature
joins the head's history, the head predicts a normalized chunk, the codec turns it into SI units.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.policy.backbone import MAX_TEXT_TOKENS, PREPROCESSOR_FILE, ImagePreprocessing
from vla_ros.policy.backends import REGISTRY
from vla_ros.policy.codec import ActionCodec
from vla_ros.policy.config import HEAD_FILE, POLICY_FILE, PolicyConfig
from vla_ros.policy.head import LSTMPolicyHead, load_head_weights
from vla_ros.policy.integrity import ModelFileError, check_model_files
from vla_ros.policy.trunk import BackendError, Trunk, load_trunk
from vla_ros.policy.types import ActionChunk, PolicySpec

MAX_IMAGE_SIDE = 8192
MAX_INSTRUCTION_CHARS = 4096
UNTRAINED_HEAD_KEY = "untrained_head"
"""`policy.yaml` flag written by `fetch_model(init_head=True)`: the head is random."""

_LOG = logging.getLogger(__name__)


def check_model_dir(model_dir: str | Path) -> Path:
    """Raise FileNotFoundError naming the first file a model directory lacks."""
    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    required: list[tuple[str, tuple[str, ...]]] = [
        ("config.json", ("config.json",)),
        (POLICY_FILE, (POLICY_FILE,)),
        (HEAD_FILE, (HEAD_FILE,)),
        (PREPROCESSOR_FILE, (PREPROCESSOR_FILE,)),
        ("tokenizer.json", ("tokenizer.json", "tokenizer.model")),
        ("model.safetensors", ("model.safetensors", "model.safetensors.index.json")),
    ]
    for name, alternatives in required:
        if not any((path / candidate).is_file() for candidate in alternatives):
            hint = f" (or {', '.join(alternatives[1:])})" if len(alternatives) > 1 else ""
            raise FileNotFoundError(f"{path / name}{hint} is missing from the model directory")
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device to load onto; fails fast, before gigabytes of weights are read.

    torch itself refuses a CUDA device on a CPU-only build with an AssertionError, and only once
    the weights are loaded; nodes turn this ValueError into a clean start-up refusal.
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid torch device {device!r}: {exc}") from exc
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: CUDA is not available to this torch build")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {device!r}: only {count} CUDA device(s) present")
    return resolved


def _text_hidden_size(config_path: Path) -> int:
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        hidden = raw["text_config"]["hidden_size"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{config_path}: cannot read text_config.hidden_size ({exc!r})") from exc
    if isinstance(hidden, bool) or not isinstance(hidden, int):
        raise ValueError(f"{config_path}: text_config.hidden_size must be an integer")
    return hidden


def validate_image(image: Any) -> np.ndarray:
    """Accept an HxWx3 uint8 RGB array (any strides); raise ValueError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8 (RGB 0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 (RGB), got shape {image.shape}")
    height, width = image.shape[:2]
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise ValueError(
            f"image must be between 1x1 and {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE}, got {height}x{width}"
        )
    return image


def validate_instruction(instruction: Any) -> str:
    """Accept a non-blank string in any language; raise ValueError otherwise."""
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a str, got {type(instruction).__name__}")
    text = instruction.strip()
    if not text:
        raise ValueError("instruction is empty (or only whitespace)")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise ValueError(
            f"instruction is {len(text)} characters long; at most {MAX_INSTRUCTION_CHARS} allowed"
        )
    return text


class VLAPolicy:
    """PaliGemma + action token + LSTM head + action codec, as one `Policy`.

    Thread-safe: `step` and `reset` may be called from different executor threads.
    The head runs in float32 whatever the backbone dtype (it is tiny next to the trunk).
    `backbone` is any trunk backend (`policy/trunk.py`); head and codec are shared.
    """

    def __init__(self, backbone: Trunk, head: LSTMPolicyHead, config: PolicyConfig) -> None:
        if backbone.hidden_size != config.hidden_size:
            raise ValueError(
                f"{POLICY_FILE} hidden_size={config.hidden_size} but the backbone's text "
                f"hidden_size is {backbone.hidden_size}"
            )
        if head.hidden_size != config.hidden_size:
            raise ValueError(
                f"{POLICY_FILE} hidden_size={config.hidden_size} but the head expects "
                f"{head.hidden_size}"
            )
        if isinstance(backbone, torch.nn.Module):
            backbone.eval()
        self.backbone = backbone
        self.head = head.to(device=backbone.device, dtype=torch.float32).eval()
        self.config = config
        self.codec = ActionCodec.from_config(config)
        self.spec = config.spec(backbone.image_size, str(backbone.device))
        self._lock = threading.Lock()
        self._cuda = backbone.device.type == "cuda"
        self._receipt_lock = threading.Lock()
        self._receipt_tokenizer: Any = None

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
    ) -> VLAPolicy:
        """Load and cross-check a model directory (HF PaliGemma files + policy.yaml + head).

        A truncated or corrupt file raises `ModelFileError` (a ValueError) naming it.
        `backend` picks the trunk: `torch` (eager transformers), `onnxruntime` or `tensorrt`
        (the graphs `vla-ros export` wrote to `onnx_dir`, default MODEL_DIR/onnx). A backend
        that cannot load raises BackendError (or the file error) instead of falling back.
        """
        if backend not in REGISTRY:
            raise BackendError(f"backend must be one of {list(REGISTRY)}, got {backend!r}")
        path = check_model_dir(model_dir)
        check_model_files(path)
        device = resolve_device(device)
        config = PolicyConfig.load(path)
        backbone_hidden = _text_hidden_size(path / "config.json")
        if backbone_hidden != config.hidden_size:
            raise ValueError(
                f"{POLICY_FILE} hidden_size={config.hidden_size} does not match config.json "
                f"text_config.hidden_size={backbone_hidden}"
            )
        head = LSTMPolicyHead.from_config(config)
        action_token = load_head_weights(path / HEAD_FILE, head)
        if config.extra.get(UNTRAINED_HEAD_KEY):
            _LOG.warning(
                "%s: the policy head is UNTRAINED (random weights from fetch-model --init-head); "
                "its actions are noise. Use it for bring-up tests only.",
                path,
            )
        try:
            trunk = load_trunk(path, backend, device, dtype, action_token, onnx_dir=onnx_dir)
        except (OSError, KeyError, TypeError, ValueError) as exc:
            # The export backends name their own files; only transformers' errors need a name.
            if isinstance(exc, ModelFileError) or backend != "torch":
                raise
            problem = " ".join(str(exc).split())
            raise ModelFileError(f"{path}: cannot load the PaliGemma files: {problem}") from exc
        return cls(trunk, head, config)

    @property
    def features(self) -> tuple[torch.Tensor, ...]:
        """The cached per-frame ACT features the head's history holds (oldest first)."""
        return self.head.history

    def instruction_problem(self, instruction: str) -> str | None:
        """Why the model cannot take `instruction` (blank, too long for it), or None.

        Asked by the inference node when an instruction arrives, so a bad one is refused once
        instead of failing every step. It tokenizes with its own copy of the tokenizer: the
        executor thread never waits for a running step, and one fast tokenizer is never used
        from two threads at once.
        """
        try:
            text = validate_instruction(instruction)
        except ValueError as exc:
            return str(exc)
        tokenizer = getattr(self.backbone, "tokenizer", None)
        if tokenizer is None:
            return None
        with self._receipt_lock:
            if self._receipt_tokenizer is None:
                self._receipt_tokenizer = copy.deepcopy(tokenizer)
            own = self._receipt_tokenizer
            count = len(own(own.eos_token + text + "\n", add_special_tokens=False)["input_ids"])
        if count > MAX_TEXT_TOKENS:
            return f"is {count} tokens long; the model takes at most {MAX_TEXT_TOKENS}"
        return None

    def reset(self) -> None:
        """Start a new episode: forget the feature history and the LSTM state."""
        with self._lock:
            self.head.reset()

    def step(self, image_rgb_uint8: np.ndarray, instruction: str) -> ActionChunk:
        """One frame + instruction -> the next action chunk in SI units."""
        image = validate_image(image_rgb_uint8)
        text = validate_instruction(instruction)
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            text_ids = self.backbone.text_ids(text)
            pixels = self.backbone.preprocess(image)
            t_pre = self._stamp()
            image_embeds = self.backbone.encode_image(pixels)
            t_vision = self._stamp()
            feature = self.backbone.feature(image_embeds, text_ids).to(torch.float32)
            if not bool(torch.isfinite(feature).all()):
                raise RuntimeError(
                    "the backbone produced a non-finite feature; it was not added to the history"
                )
            t_decoder = self._stamp()
            motion, logits = self.head.step(feature)
            motion_np = motion.cpu().numpy()
            logits_np = None if logits is None else logits.cpu().numpy()
        motion_si = self.codec.decode_motion(motion_np)
        gripper = gripper_prob = None
        if logits_np is not None:
            gripper, gripper_prob = self.codec.decode_gripper(logits_np)
        end = time.perf_counter()
        timings = {
            "preprocess": t_pre - start,
            "vision": t_vision - t_pre,
            "decoder": t_decoder - t_vision,
            "head": end - t_decoder,
            "total": end - start,
        }
        return ActionChunk(
            motion=motion_si,
            action_period_s=self.config.action_period_s,
            gripper=gripper,
            gripper_prob=gripper_prob,
            timings_ms={key: value * 1000.0 for key, value in timings.items()},
        )

    def _stamp(self) -> float:
        """A stage boundary time; on CUDA waits for the queued kernels so stages are honest."""
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def read_spec(model_dir: str | Path, device: str = "cpu") -> PolicySpec:
    """The PolicySpec of a model directory without loading any weights."""
    path = check_model_dir(model_dir)
    config = PolicyConfig.load(path)
    preprocessing = ImagePreprocessing.from_file(path / PREPROCESSOR_FILE)
    return config.spec(preprocessing.size, device)
