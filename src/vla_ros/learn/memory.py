"""Analytic peak GPU memory of `vla-ros train --recipe lora` (no GPU needed to plan one).

Counts what a training step keeps alive: frozen bf16 weights, the trainable LoRA + action token +
head with fp32 master weights, gradients and two Adam moments (16 bytes per parameter), and the
decoder activations autograd saves for the backward pass of every frame in the batch
(batch x window frames, each a [<eos>][image][text][ACT][\\n] sequence). The frozen SigLIP runs
without saving activations. Per token and decoder layer the saved tensors are about ten
hidden-size vectors (norm inputs/outputs, q/k/v/o and the residuals) plus three FFN-size ones
(gate, up, their product); with gradient checkpointing only each layer's input is kept and one
layer's activations are live again during its recomputation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

GIB = 1024**3
HIDDEN_TENSORS_PER_TOKEN = 10
FFN_TENSORS_PER_TOKEN = 3
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class PaliGemmaSizes:
    """The shapes that decide memory; defaults = google/paligemma-3b-pt-224 + RoboVLMs head."""

    vision_layers: int = 27
    vision_hidden: int = 1152
    vision_ffn: int = 4304
    patch: int = 14
    image_size: int = 224
    text_layers: int = 18
    text_hidden: int = 2048
    text_ffn: int = 16384
    heads: int = 8
    kv_heads: int = 1
    head_dim: int = 256
    vocab: int = 257216
    lstm_hidden: int = 1024
    lstm_layers: int = 4
    mlp_hidden: tuple[int, ...] = (1024, 512, 256)
    chunk: int = 10
    motion_dof: int = 3

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    def vision_params(self) -> int:
        d, f = self.vision_hidden, self.vision_ffn
        layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 4 * d
        embed = 3 * self.patch**2 * d + d + self.image_tokens * d
        return self.vision_layers * layer + embed + 2 * d

    def text_params(self) -> int:
        d, f = self.text_hidden, self.text_ffn
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        layer = d * q + 2 * d * kv + q * d + 3 * d * f + 2 * d
        return self.text_layers * layer + self.vocab * d + d

    def projector_params(self) -> int:
        return self.vision_hidden * self.text_hidden + self.text_hidden

    def head_params(self) -> int:
        h = self.lstm_hidden
        lstm = 4 * h * (self.text_hidden + h + 2) + (self.lstm_layers - 1) * 4 * h * (2 * h + 2)
        widths = (h, *self.mlp_hidden, self.chunk * self.motion_dof)
        mlp = sum(a * b + b for a, b in itertools.pairwise(widths))
        return lstm + mlp

    def lora_params(self, rank: int) -> int:
        d, f = self.text_hidden, self.text_ffn
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q": (d, q), "k": (d, kv), "v": (d, kv), "o": (q, d)}
        shapes.update({"gate": (d, f), "up": (d, f), "down": (f, d)})
        per_layer = sum(rank * (a + b) for a, b in (shapes[t] for t in LORA_TARGETS))
        return self.text_layers * per_layer


def lora_peak_memory(
    sizes: PaliGemmaSizes | None = None,
    batch: int = 4,
    window: int = 8,
    text_tokens: int = 20,
    rank: int = 16,
    weight_bytes: int = 2,
    activation_bytes: int = 2,
    gradient_checkpointing: bool = False,
    workspace_gib: float = 1.0,
) -> dict[str, float]:
    """Peak memory in GiB by component (and `total`) of one LoRA training step."""
    s = sizes or PaliGemmaSizes()
    frozen = s.vision_params() + s.text_params() + s.projector_params()
    trainable = s.lora_params(rank) + s.head_params() + s.text_hidden
    frames = batch * window
    tokens = s.image_tokens + text_tokens + 3
    per_token_layer = activation_bytes * (
        HIDDEN_TENSORS_PER_TOKEN * s.text_hidden + FFN_TENSORS_PER_TOKEN * s.text_ffn
    )
    if gradient_checkpointing:
        saved = frames * tokens * s.text_layers * activation_bytes * s.text_hidden
        saved += frames * tokens * per_token_layer
    else:
        saved = frames * tokens * s.text_layers * per_token_layer
    vision_peak = frames * s.image_tokens * activation_bytes * (4 * s.vision_hidden + s.vision_ffn)
    parts = {
        "frozen_weights": frozen * weight_bytes / GIB,
        "trainable_states": trainable * 16 / GIB,
        "decoder_activations": saved / GIB,
        "vision_forward": vision_peak / GIB,
        "workspace": workspace_gib,
    }
    parts["total"] = sum(parts.values())
    parts["frozen_params_billion"] = frozen / 1e9
    parts["trainable_params_million"] = trainable / 1e6
    return parts
