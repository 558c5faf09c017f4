"""LSTM policy head (RoboVLMs `LSTMDecoder`) and its weight file `policy_head.safetensors`.

Structure, read from RoboVLMs' `robovlms/model/policy_head/base_policy.py`:

- `rnn`: `nn.LSTM(hidden -> lstm_hidden, num_layers=lstm_layers, batch_first=True)`, no dropout at
  inference. It keeps PyTorch's default LSTM initialisation: RoboVLMs' `initialize_param` only
  touches modules that have a `weight` attribute, which `nn.LSTM` does not.
- `motion`: Linear(lstm_hidden, m0)-ReLU-Linear(m0, m1)-ReLU-Linear(m1, m2)-ReLU-Linear(m2, out)
  -Tanh with out = chunk * motion_dof (RoboVLMs' `MLPTanhHead`, m = 1024, 512, 256).
- `gripper` (arm7 only): the same MLP without the Tanh, out = chunk logits (`MLPSigmoidHead`, which
  despite its name ends without a sigmoid; BCE-with-logits is applied in the loss).
- Every MLP `Linear` gets Xavier-uniform weights and zero bias.

Inference memory (RoboVLMs' `history_memory` / `hidden_state`), mode `window`: each call appends
the new per-frame feature. While the history holds at most `window` features, the LSTM advances
one step from the (h, c) it carried from the previous call. Once a call pushes the history past
`window`, the oldest feature is dropped and the LSTM is re-run from a zero state over the last
`window` features; that run's final state is discarded, so every later call re-runs the window
too. The action chunk always comes from the output of the last time step. Mode `stateful` keeps
stepping one feature at a time with the carried state forever: same result until the window
fills, `window` times fewer LSTM FLOPs afterwards, but its memory never forgets.

On CPU the LSTM runs with oneDNN switched off: at batch 1 oneDNN's LSTM costs a near-fixed
~90 ms per call at RoboVLMs size against ~9 ms for PyTorch's native kernel (same result to 1e-7;
`test/bench/bench_policy.py` measures both modes).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vla_ros.policy.config import HISTORY_MODES, PolicyConfig

# torch warns about Intel-GPU TF32 each time the oneDNN flags are toggled; irrelevant here.
warnings.filterwarnings(
    "ignore", message="TF32 acceleration on top of oneDNN", category=UserWarning
)

ACTION_TOKEN_KEY = "action_token"
HEAD_PREFIX = "head."


def _mlp(in_features: int, hidden: Sequence[int], out_features: int, tanh: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class LSTMPolicyHead(nn.Module):
    """Per-frame action-token features -> a normalized action chunk (and gripper logits)."""

    def __init__(
        self,
        hidden_size: int,
        chunk: int,
        motion_dof: int,
        with_gripper: bool,
        lstm_hidden: int = 1024,
        lstm_layers: int = 4,
        mlp_hidden: Sequence[int] = (1024, 512, 256),
        window: int = 8,
        history_mode: str = "window",
    ) -> None:
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("chunk", chunk),
            ("motion_dof", motion_dof),
            ("lstm_hidden", lstm_hidden),
            ("lstm_layers", lstm_layers),
            ("window", window),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if history_mode not in HISTORY_MODES:
            raise ValueError(
                f"history_mode must be one of {list(HISTORY_MODES)}, got {history_mode!r}"
            )
        self.hidden_size = hidden_size
        self.chunk = chunk
        self.motion_dof = motion_dof
        self.window = window
        self.history_mode = history_mode
        self.rnn = nn.LSTM(hidden_size, lstm_hidden, num_layers=lstm_layers, batch_first=True)
        self.motion = _mlp(lstm_hidden, mlp_hidden, chunk * motion_dof, tanh=True)
        self.gripper = _mlp(lstm_hidden, mlp_hidden, chunk, tanh=False) if with_gripper else None
        self._init_mlps()
        self._history: list[torch.Tensor] = []
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, config: PolicyConfig) -> LSTMPolicyHead:
        """The head `policy.yaml` describes, so every loader and writer builds the same shapes."""
        return cls(
            hidden_size=config.hidden_size,
            chunk=config.chunk,
            motion_dof=config.motion_dof,
            with_gripper=config.has_gripper,
            lstm_hidden=config.lstm_hidden,
            lstm_layers=config.lstm_layers,
            mlp_hidden=config.mlp_hidden,
            window=config.window,
            history_mode=config.history_mode,
        )

    def _init_mlps(self) -> None:
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    module.bias.zero_()

    @property
    def with_gripper(self) -> bool:
        return self.gripper is not None

    @property
    def history(self) -> tuple[torch.Tensor, ...]:
        """The cached per-frame features (oldest first), at most `window` of them."""
        return tuple(self._history)

    def reset(self) -> None:
        """Forget the feature history and the carried LSTM state (new episode)."""
        self._history.clear()
        self._state = None

    def decode(self, rnn_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """LSTM output (B, lstm_hidden) -> motion (B, chunk, dof) in [-1, 1], logits (B, chunk)."""
        motion = self.motion(rnn_out).reshape(-1, self.chunk, self.motion_dof)
        logits = self.gripper(rnn_out) if self.gripper is not None else None
        return motion, logits

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stateless: run (B, T, hidden) features from a zero state, decode the last step."""
        if features.ndim != 3 or features.shape[-1] != self.hidden_size:
            raise ValueError(
                f"features must be (batch, time, {self.hidden_size}), got {tuple(features.shape)}"
            )
        out, _ = self.rnn(features)
        return self.decode(out[:, -1])

    @torch.no_grad()
    def step(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feed one frame's feature (hidden,) through the history -> (chunk, dof), (chunk,)."""
        if feature.shape != (self.hidden_size,):
            raise ValueError(
                f"feature must have shape ({self.hidden_size},), got {tuple(feature.shape)}"
            )
        self._history.append(feature)
        x = feature.reshape(1, 1, -1)
        with torch.backends.mkldnn.flags(enabled=feature.device.type != "cpu"):
            if self.history_mode == "stateful":
                out, self._state = self.rnn(x, self._state)
                if len(self._history) > self.window:
                    del self._history[0]
            elif len(self._history) <= self.window:
                out, self._state = self.rnn(x, self._state)
            else:
                del self._history[0]
                out, _ = self.rnn(torch.stack(self._history).unsqueeze(0))
                self._state = None
        motion, logits = self.decode(out[:, -1])
        return motion[0], None if logits is None else logits[0]


def head_state(action_token: torch.Tensor, head: LSTMPolicyHead) -> dict[str, torch.Tensor]:
    """The tensors of `policy_head.safetensors`, keyed as the file contract says."""
    tensors = {ACTION_TOKEN_KEY: action_token.detach()}
    for key, value in head.state_dict().items():
        tensors[HEAD_PREFIX + key] = value.detach()
    return {key: value.to("cpu").contiguous() for key, value in tensors.items()}


def save_head_weights(path: str | Path, action_token: torch.Tensor, head: LSTMPolicyHead) -> Path:
    """Write `policy_head.safetensors` (action token + LSTM + MLP heads)."""
    from safetensors.torch import save_file

    if action_token.shape != (head.hidden_size,):
        raise ValueError(
            f"{ACTION_TOKEN_KEY} must have shape ({head.hidden_size},), "
            f"got {tuple(action_token.shape)}"
        )
    path = Path(path)
    save_file(head_state(action_token, head), str(path), metadata={"format": "pt"})
    return path


def load_head_weights(path: str | Path, head: LSTMPolicyHead) -> torch.Tensor:
    """Load the file into `head` (strict keys and shapes); returns the action token.

    A wrong file fails with the offending key and both shapes, not with a torch size error.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the policy head weights are required")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file: {exc}") from exc
    expected = {ACTION_TOKEN_KEY: torch.Size([head.hidden_size])}
    expected.update({HEAD_PREFIX + key: value.shape for key, value in head.state_dict().items()})
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {', '.join(missing)}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(
            f"{path}: unexpected tensor(s) {', '.join(unexpected)} "
            f"(a gripper head in a mobile3 model, or a different MLP depth?)"
        )
    for key, shape in expected.items():
        if tensors[key].shape != shape:
            raise ValueError(
                f"{path}: tensor {key} has shape {list(tensors[key].shape)}, "
                f"expected {list(shape)} from policy.yaml"
            )
        if not torch.isfinite(tensors[key]).all():
            raise ValueError(f"{path}: tensor {key} contains NaN or Inf")
    head.load_state_dict(
        {
            key[len(HEAD_PREFIX) :]: value
            for key, value in tensors.items()
            if key != ACTION_TOKEN_KEY
        }
    )
    return tensors[ACTION_TOKEN_KEY]
