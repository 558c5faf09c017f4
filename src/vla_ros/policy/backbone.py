"""PaliGemma trunk of the policy: one VLM pass per frame -> the action-token feature.

Reproduces RoboVLMs' `forward_continuous` ("post" history) on transformers 5.x:

- Image embeddings = vision tower -> multi_modal_projector -> / sqrt(hidden). 5.x's
  `get_image_features` does not divide (its PaliGemma relies on unscaled text embeddings instead),
  so the division happens here, once.
- Text = `<eos>` + instruction.strip() + `\\n`, tokenized without special tokens.
- Per frame: `[<eos>] [image] [instruction] [ACT] [\\n]`, ACT = the learnable `action_token`
  inserted one position before the end.
- RoboVLMs ran transformers 4.44, whose Gemma multiplied *any* `inputs_embeds` by sqrt(hidden) and
  whose embedding table was unscaled. 5.x moved that factor into the embedding module, so the raw
  table rows are looked up here and the whole sequence (image, text, ACT) is multiplied by the
  normalizer, exactly as 4.44 did.
- Attention is causal. 5.x PaliGemma configs say `use_bidirectional_attention=True`, which makes
  Gemma attend both ways when fed `inputs_embeds`; `force_causal` switches every layer back.
- The feature is the final-norm hidden state at ACT, from the Gemma base model: the 257k-vocab
  LM head is never computed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.files import read_mapping

PREPROCESSOR_FILE = "preprocessor_config.json"
MAX_TEXT_TOKENS = 256
"""RoboVLMs' `max_text_len`; a longer instruction is refused instead of slowing every frame."""

_TEXT_CACHE_SIZE = 16


@dataclass(frozen=True)
class ImagePreprocessing:
    """The parts of `preprocessor_config.json` the SigLIP processor applies to one RGB image."""

    size: int = 224
    do_resize: bool = True
    resample: int = 3
    do_rescale: bool = True
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_file(cls, path: str | Path) -> ImagePreprocessing:
        """Read the processor file, so our preprocessing follows the checkpoint's, not a guess."""
        raw = read_mapping(path, "the image preprocessing is unknown", "processor settings")
        size = raw.get("size", {"height": cls.size, "width": cls.size})
        if isinstance(size, int):
            height = width = size
        elif isinstance(size, dict) and "height" in size and "width" in size:
            height, width = size["height"], size["width"]
        else:
            raise ValueError(f"{path}: size must be {{height, width}}, got {size!r}")
        if height != width or not isinstance(height, int) or height < 1:
            raise ValueError(f"{path}: only square positive sizes are supported, got {size!r}")
        mean = _triple(raw.get("image_mean", cls.image_mean), path, "image_mean")
        std = _triple(raw.get("image_std", cls.image_std), path, "image_std")
        if not all(s > 0 for s in std):
            raise ValueError(f"{path}: image_std must be > 0, got {list(std)}")
        return cls(
            size=height,
            do_resize=bool(raw.get("do_resize", True)),
            resample=int(raw.get("resample", cls.resample)),
            do_rescale=bool(raw.get("do_rescale", True)),
            rescale_factor=float(raw.get("rescale_factor", cls.rescale_factor)),
            do_normalize=bool(raw.get("do_normalize", True)),
            image_mean=mean,
            image_std=std,
        )

    def resize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> a writeable contiguous SxS uint8 frame, resized as the processor does.

        Only a frame that is not already S x S is resized (PIL, the configured filter).
        """
        from PIL import Image

        size = self.size
        if image.shape[:2] != (size, size):
            if not self.do_resize:
                raise ValueError(
                    f"image must be {size}x{size} (do_resize is off), got {image.shape[:2]}"
                )
            resized = Image.fromarray(np.ascontiguousarray(image)).resize(
                (size, size), resample=self.resample
            )
            image = np.array(resized)
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image)
        return image

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (scale, offset) so that pixel * scale + offset == the processor output."""
        rescale = self.rescale_factor if self.do_rescale else 1.0
        mean = np.asarray(self.image_mean if self.do_normalize else (0.0,) * 3, dtype=np.float64)
        std = np.asarray(self.image_std if self.do_normalize else (1.0,) * 3, dtype=np.float64)
        return rescale / std, -mean / std


def _triple(value: Any, path: Path, name: str) -> tuple[float, float, float]:
    """HF allows one number for all channels or one per channel."""
    values = [value] * 3 if isinstance(value, int | float) else value
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {name} must be 1 or 3 numbers, got {value!r}") from exc
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
        raise ValueError(f"{path}: {name} must be 1 or 3 finite numbers, got {value!r}")
    return triple  # type: ignore[return-value]


def instruction_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `<eos>` + text + `\\n` without special tokens, length-checked."""
    ids = tokenizer(tokenizer.eos_token + text + "\n", add_special_tokens=False)["input_ids"]
    if len(ids) > MAX_TEXT_TOKENS:
        raise ValueError(
            f"instruction is {len(ids)} tokens long; at most {MAX_TEXT_TOKENS} are supported"
        )
    if len(ids) < 3 or ids[0] != tokenizer.eos_token_id:
        raise ValueError(f"instruction {text!r} did not tokenize to <eos> ... \\n: {ids}")
    return list(ids)


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No transformers progress bars while loading/saving (they clutter node logs)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def force_causal(language_model: nn.Module) -> None:
    """Make a Gemma base model attend causally whatever its config says."""
    config = getattr(language_model, "config", None)
    if config is not None and hasattr(config, "use_bidirectional_attention"):
        config.use_bidirectional_attention = False
    for module in language_model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = True


class PaliGemmaBackbone(nn.Module):
    """A `PaliGemmaForConditionalGeneration` used as a feature extractor, plus the action token.

    The `torch` trunk backend (`policy/trunk.py`); the ONNX graphs are exported from it.
    """

    backend = "torch"

    def __init__(
        self,
        vlm: nn.Module,
        tokenizer: Any = None,
        preprocessing: ImagePreprocessing | None = None,
    ) -> None:
        super().__init__()
        inner = getattr(vlm, "model", None)
        for part in ("vision_tower", "multi_modal_projector", "language_model"):
            if not hasattr(inner, part):
                raise ValueError(
                    f"expected a transformers PaliGemmaForConditionalGeneration (model.{part} "
                    f"missing), got {type(vlm).__name__}"
                )
        self.vlm = vlm
        force_causal(self.language_model)
        self.tokenizer = tokenizer
        text_config = vlm.config.text_config
        self.hidden_size = int(text_config.hidden_size)
        self.num_image_tokens = int(
            (vlm.config.vision_config.image_size // vlm.config.vision_config.patch_size) ** 2
        )
        self.preprocessing = preprocessing or ImagePreprocessing(
            size=int(vlm.config.vision_config.image_size)
        )
        if self.preprocessing.size != vlm.config.vision_config.image_size:
            raise ValueError(
                f"{PREPROCESSOR_FILE} size {self.preprocessing.size} does not match "
                f"config.json vision_config.image_size {vlm.config.vision_config.image_size}"
            )
        weight = self.language_model.embed_tokens.weight
        self.action_token = nn.Parameter(
            torch.zeros(self.hidden_size, dtype=weight.dtype, device=weight.device)
        )
        scale, offset = self.preprocessing.affine()
        for name, value in (("_pixel_scale", scale), ("_pixel_offset", offset)):
            tensor = torch.tensor(value, dtype=torch.float32).reshape(1, 3, 1, 1)
            self.register_buffer(name, tensor, persistent=False)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._mask_cache: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> PaliGemmaBackbone:
        """Load the Hugging Face files of a model directory (weights, tokenizer, preprocessor)."""
        from transformers import AutoTokenizer, PaliGemmaForConditionalGeneration

        model_dir = Path(model_dir)
        preprocessing = ImagePreprocessing.from_file(model_dir / PREPROCESSOR_FILE)
        with quiet_progress():
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            vlm = PaliGemmaForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype)
        vlm.eval()
        backbone = cls(vlm, tokenizer, preprocessing)
        return backbone.to(device)

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        action_token: torch.Tensor,
    ) -> PaliGemmaBackbone:
        """The `torch` trunk backend (see `policy/backends.py`): the eager model with the
        policy's trained action token."""
        backbone = cls.from_pretrained(model_dir, device=device, dtype=dtype)
        with torch.no_grad():
            backbone.action_token.copy_(action_token.to(backbone.action_token))
        return backbone

    @property
    def vision_tower(self) -> nn.Module:
        return self.vlm.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        return self.vlm.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        """The Gemma base model (decoder layers + final norm, no LM head)."""
        return self.vlm.model.language_model

    @property
    def device(self) -> torch.device:
        return self.action_token.device

    @property
    def dtype(self) -> torch.dtype:
        return self.action_token.dtype

    @property
    def image_size(self) -> int:
        return self.preprocessing.size

    def preprocess(self, image_rgb_uint8: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 RGB -> (1, 3, S, S) pixel values, as the HF SigLIP processor computes them.

        Resizing (only when the frame is not already S x S) uses PIL with the configured filter,
        like the processor; the uint8 frame then goes to the device as is and becomes float once.
        """
        image = self.preprocessing.resize(image_rgb_uint8)
        pixels = torch.from_numpy(image).to(self.device).permute(2, 0, 1).unsqueeze(0)
        pixels = pixels.to(torch.float32).mul_(self._pixel_scale).add_(self._pixel_offset)
        return pixels.to(self.dtype)

    def text_ids(self, instruction: str) -> torch.Tensor:
        """Token ids of `<eos>` + instruction.strip() + `\\n` (cached per instruction)."""
        text = instruction.strip()
        cached = self._text_cache.get(text)
        if cached is not None:
            self._text_cache.move_to_end(text)
            return cached.to(self.device)
        if self.tokenizer is None:
            raise RuntimeError("this backbone has no tokenizer")
        ids = instruction_ids(self.tokenizer, text)
        tensor = torch.tensor(ids, dtype=torch.long, device=self.device)
        self._text_cache[text] = tensor
        if len(self._text_cache) > _TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return tensor

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) -> (1, num_image_tokens, hidden): projected and divided by sqrt(hidden)."""
        features = self.vision_tower(pixel_values).last_hidden_state
        return self.projector(features) / math.sqrt(self.hidden_size)

    def sequence(
        self, image_embeds: torch.Tensor, text_ids: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """The decoder input `[<eos>] [image] [instruction] [ACT] [\\n]` and the ACT position.

        Multiplied by the 4.44 normalizer sqrt(hidden) (in the working dtype, as 4.44 did).
        """
        text = F.embedding(text_ids, self.language_model.embed_tokens.weight)
        dtype = text.dtype
        parts = [
            text[:1],
            image_embeds[0].to(dtype),
            text[1:-1],
            self.action_token.to(dtype).unsqueeze(0),
            text[-1:],
        ]
        embeds = torch.cat(parts, dim=0).unsqueeze(0)
        normalizer = torch.tensor(self.hidden_size**0.5, dtype=dtype, device=embeds.device)
        act_index = embeds.shape[1] - 2
        return embeds * normalizer, act_index

    def decode(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Causal Gemma pass (base model, no LM head) -> final-norm hidden states (1, L, hidden)."""
        length = inputs_embeds.shape[1]
        # PaliGemma numbers positions from 1.
        position_ids = torch.arange(1, length + 1, device=inputs_embeds.device).unsqueeze(0)
        output = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=self._causal_mask(length, inputs_embeds.dtype, inputs_embeds.device),
            position_ids=position_ids,
            use_cache=False,
        )
        return output.last_hidden_state

    def _causal_mask(self, length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive (1, 1, L, L) causal mask, cached per length.

        Explicit rather than left to the attention backend, so causality holds whatever the
        config says, and no data-dependent mask analysis runs (works on the meta device).
        """
        key = (length, dtype, device)
        mask = self._mask_cache.get(key)
        if mask is None:
            blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
            mask = torch.zeros(length, length, dtype=dtype, device=device)
            mask = mask.masked_fill(blocked, torch.finfo(dtype).min)[None, None]
            self._mask_cache = {key: mask}
        return mask

    def feature(self, image_embeds: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        """The ACT hidden state (hidden,) for one frame's image embeddings and instruction ids."""
        embeds, act_index = self.sequence(image_embeds, text_ids)
        return self.decode(embeds)[0, act_index]

    def batch_features(
        self, pixel_values: torch.Tensor, text_ids: list[torch.Tensor]
    ) -> torch.Tensor:
        """ACT features (N, hidden) of N frames in one vision and one decoder pass (training).

        Each frame's sequence is the one `feature` builds; shorter ones are right-padded, which
        the causal mask keeps invisible to every earlier position, so each row equals `feature`.
        """
        if pixel_values.shape[0] != len(text_ids):
            raise ValueError(f"{pixel_values.shape[0]} frames but {len(text_ids)} instructions")
        image_embeds = self.encode_image(pixel_values)
        sequences, positions = [], []
        for index, ids in enumerate(text_ids):
            embeds, act_index = self.sequence(image_embeds[index : index + 1], ids)
            sequences.append(embeds[0])
            positions.append(act_index)
        padded = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
        hidden = self.decode(padded)
        rows = torch.arange(len(positions), device=hidden.device)
        return hidden[rows, torch.tensor(positions, device=hidden.device)]

    def forward(self, pixel_values: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        return self.feature(self.encode_image(pixel_values), text_ids)
