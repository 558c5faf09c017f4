"""The trunk seam: one interface, three backends (`torch`, `onnxruntime`, `tensorrt`).

A trunk turns one frame and an instruction into the ACT feature the LSTM head consumes:

    text_ids(instruction) -> ids          preprocess(image) -> pixels
    encode_image(pixels) -> image embeddings (256 x d, already divided by sqrt(d))
    feature(image embeddings, ids) -> ACT hidden state (d,) after the final norm, float32 torch

`torch` is `PaliGemmaBackbone` (eager transformers). The graph backends run the two graphs that
`vla-ros export` writes (`policy/onnx_export.py`): a vision graph and a prefix graph per text
bucket. They share `GraphTrunk` below: the tokenizer and SigLIP preprocessing come from the model
directory as for torch, the text embedding rows are read from `model.safetensors` on demand
(memory-mapped, a few rows per instruction, never the 1 GB table), and the action token from
`policy_head.safetensors`. Head and codec are the same objects whatever the backend.

A backend that cannot load raises `BackendError` saying why; nothing falls back to another one.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vla_ros.policy.backbone import PREPROCESSOR_FILE, ImagePreprocessing, instruction_ids
from vla_ros.policy.backends import REGISTRY

DEFAULT_ONNX_DIR = "onnx"
"""Where `vla-ros export` writes by default and the graph backends look: MODEL_DIR/onnx."""

_TEXT_CACHE_SIZE = 16
_LOG = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """A trunk backend that cannot run here or cannot load its files; the message says why."""


class Trunk(Protocol):
    """What `VLAPolicy` needs from a backend."""

    backend: str
    hidden_size: int

    @property
    def image_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def text_ids(self, instruction: str) -> Any: ...

    def preprocess(self, image_rgb_uint8: np.ndarray) -> Any: ...

    def encode_image(self, pixel_values: Any) -> Any: ...

    def feature(self, image_embeds: Any, text_ids: Any) -> torch.Tensor: ...


class EmbeddingRows:
    """Rows of Gemma's token embedding table, read straight from the safetensors file(s).

    The table is 257k x 2048 (1 GB in bf16); an instruction needs ~20 rows, so the graph backends
    memory-map the file and slice the rows they need instead of holding the table.
    """

    def __init__(self, model_dir: str | Path) -> None:
        self.path, self.key = _find_embedding(Path(model_dir))
        from safetensors import safe_open

        self._file = safe_open(str(self.path), framework="pt")
        self._slice = self._file.get_slice(self.key)
        self.shape = tuple(self._slice.get_shape())

    def rows(self, ids: list[int]) -> np.ndarray:
        """(len(ids), hidden) float32 rows of the table."""
        vocab = self.shape[0]
        out = np.empty((len(ids), self.shape[1]), dtype=np.float32)
        for i, token in enumerate(ids):
            if not 0 <= token < vocab:
                raise ValueError(f"token id {token} outside the embedding table ({vocab} rows)")
            out[i] = self._slice[token : token + 1].to(torch.float32).numpy()[0]
        return out


def _find_embedding(model_dir: Path) -> tuple[Path, str]:
    """(file, key) of the language model's `embed_tokens.weight` in a single or sharded export."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{index}: no readable weight_map ({exc!r})") from exc
        keys = {key: model_dir / file for key, file in weight_map.items()}
    else:
        from safetensors import safe_open

        path = model_dir / "model.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            keys = {key: path for key in handle.keys()}  # noqa: SIM118 (not a dict)
    found = [key for key in keys if key.endswith("embed_tokens.weight") and "language" in key]
    if len(found) != 1:
        raise ValueError(
            f"{model_dir}: expected one language-model embed_tokens.weight, found {found}"
        )
    return keys[found[0]], found[0]


def choose_bucket(rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest text bucket that holds `rows` text rows (instruction + ACT)."""
    for bucket in sorted(buckets):
        if rows <= bucket:
            return bucket
    raise ValueError(
        f"instruction needs {rows} text rows (tokens + ACT) but the exported prefix graphs take "
        f"at most {max(buckets)}; shorten it or re-export with a larger --text-buckets value"
    )


class GraphTrunk:
    """The backend-independent half of the `onnxruntime` and `tensorrt` trunks.

    Subclasses run `vision(pixels)` and `prefix(bucket, image_embeds, text_rows, act_index)`.
    """

    backend = "graph"

    def __init__(
        self,
        model_dir: str | Path,
        hidden_size: int,
        num_image_tokens: int,
        buckets: tuple[int, ...],
        action_token: torch.Tensor,
        device: torch.device,
        input_dtype: str = "float32",
    ) -> None:
        from transformers import AutoTokenizer

        from vla_ros.policy.backbone import quiet_progress

        model_dir = Path(model_dir)
        self.preprocessing = ImagePreprocessing.from_file(model_dir / PREPROCESSOR_FILE)
        with quiet_progress():
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.embeddings = EmbeddingRows(model_dir)
        if self.embeddings.shape[1] != hidden_size:
            raise ValueError(
                f"{self.embeddings.path}: embedding width {self.embeddings.shape[1]} does not "
                f"match the exported graphs' hidden size {hidden_size}"
            )
        if tuple(action_token.shape) != (hidden_size,):
            raise ValueError(f"action token must have shape ({hidden_size},)")
        self.hidden_size = hidden_size
        self.num_image_tokens = num_image_tokens
        self.buckets = tuple(sorted(buckets))
        self.input_dtype = np.dtype(input_dtype)
        self._action_token = action_token.detach().to(torch.float32).cpu().numpy()
        self._device = device
        scale, offset = self.preprocessing.affine()
        self._scale = scale.astype(np.float32).reshape(1, 3, 1, 1)
        self._offset = offset.astype(np.float32).reshape(1, 3, 1, 1)
        self._text_cache: OrderedDict[tuple[int, ...], tuple[int, np.ndarray, np.ndarray]] = (
            OrderedDict()
        )

    @property
    def image_size(self) -> int:
        return self.preprocessing.size

    @property
    def device(self) -> torch.device:
        """Where features land: the head's device."""
        return self._device

    def text_ids(self, instruction: str) -> tuple[int, ...]:
        return tuple(instruction_ids(self.tokenizer, instruction.strip()))

    def preprocess(self, image_rgb_uint8: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> (1, 3, S, S) float32, the same affine map as the torch trunk."""
        image = self.preprocessing.resize(image_rgb_uint8)
        pixels = image.transpose(2, 0, 1)[None].astype(np.float32)
        pixels *= self._scale
        pixels += self._offset
        return pixels.astype(self.input_dtype, copy=False)

    def text_inputs(self, ids: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
        """(bucket, text rows (1, bucket, d) float32, ACT position (1,) int64) for the prefix.

        Rows: `<eos>`, instruction, ACT, `\\n`, then zeros. The prefix graph puts the image after
        the first row; under causal attention the trailing zeros cannot reach ACT.
        """
        cached = self._text_cache.get(ids)
        if cached is not None:
            self._text_cache.move_to_end(ids)
            return cached
        rows = len(ids) + 1
        bucket = choose_bucket(rows, self.buckets)
        text = np.zeros((1, bucket, self.hidden_size), dtype=np.float32)
        table = self.embeddings.rows(list(ids))
        text[0, : len(ids) - 1] = table[:-1]
        text[0, len(ids) - 1] = self._action_token
        text[0, len(ids)] = table[-1]
        act_index = np.array([self.num_image_tokens + len(ids) - 1], dtype=np.int64)
        entry = (bucket, text.astype(self.input_dtype, copy=False), act_index)
        self._text_cache[ids] = entry
        if len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return entry

    def encode_image(self, pixel_values: np.ndarray) -> Any:
        return self.vision(pixel_values)

    def feature(self, image_embeds: Any, text_ids: tuple[int, ...]) -> torch.Tensor:
        bucket, text, act_index = self.text_inputs(text_ids)
        out = self.prefix(bucket, image_embeds, text, act_index)
        return torch.from_numpy(np.asarray(out, dtype=np.float32).reshape(-1)).to(self._device)

    def vision(self, pixel_values: np.ndarray) -> Any:
        raise NotImplementedError

    def prefix(
        self, bucket: int, image_embeds: Any, text: np.ndarray, act_index: np.ndarray
    ) -> np.ndarray:
        raise NotImplementedError


def load_trunk(
    model_dir: str | Path,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    action_token: torch.Tensor,
    onnx_dir: str | Path | None = None,
) -> Trunk:
    """The trunk of `backend` for a checked model directory; BackendError when it cannot load."""
    entry = REGISTRY.get(backend)
    if entry is None:
        raise BackendError(f"backend must be one of {list(REGISTRY)}, got {backend!r}")
    model_dir = Path(model_dir)
    if not entry.graphs:
        return entry.load(model_dir, device, dtype, action_token)
    graphs = Path(onnx_dir) if onnx_dir is not None else model_dir / DEFAULT_ONNX_DIR
    if dtype != torch.float32:
        _LOG.info(
            "dtype %s is not used by the %s backend: the precision is the export's", dtype, backend
        )
    return entry.load(model_dir, graphs, device, action_token)
