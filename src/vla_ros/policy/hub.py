"""Fetch the real PaliGemma backbone from the Hugging Face hub into a model directory.

The only place that touches the network, on the user's machine, by explicit command. Build and
CI machines are offline: every failure becomes a RuntimeError that says what to do.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from vla_ros.policy.config import HEAD_FILE, POLICY_FILE, PolicyConfig
from vla_ros.policy.types import MOTION_DOF

DEFAULT_REPO_ID = "google/paligemma-3b-pt-224"
DOWNLOAD_BYTES = 5.9e9
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model"]

_LOG = logging.getLogger(__name__)


def _help(repo_id: str) -> str:
    return (
        f"Fetching {repo_id} needs network access to huggingface.co, about "
        f"{DOWNLOAD_BYTES / 1e9:.1f} GB of free disk, and (for Google's gated PaliGemma models) "
        f"the licence accepted on https://huggingface.co/{repo_id} with the same account whose "
        "token you pass via HF_TOKEN (or `hf auth login`)."
    )


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in {"1", "true", "yes", "on"} or bool(constants.HF_HUB_OFFLINE)


def _check_disk(out: Path) -> None:
    present = sum(p.stat().st_size for p in out.glob("*.safetensors") if p.name != HEAD_FILE)
    free = shutil.disk_usage(out).free
    if free + present < DOWNLOAD_BYTES:
        raise RuntimeError(
            f"not enough disk space in {out}: {free / 1e9:.1f} GB free, the backbone needs "
            f"about {DOWNLOAD_BYTES / 1e9:.1f} GB"
        )


def fetch_model(
    out_dir: str | Path,
    repo_id: str = DEFAULT_REPO_ID,
    action_space: str = "mobile3",
    revision: str | None = None,
    token: str | None = None,
    init_head: bool = False,
) -> Path:
    """Download the backbone files into `out_dir` and write its `policy.yaml`.

    With `init_head` a random, UNTRAINED head is written (bring-up tests only); otherwise the head
    must come from `vla-ros import-robovlms`.
    """
    if action_space not in MOTION_DOF:
        raise ValueError(f"action_space must be one of {sorted(MOTION_DOF)}, got {action_space!r}")
    if _offline():
        raise RuntimeError(
            f"cannot fetch {repo_id}: Hugging Face hub offline mode is on (HF_HUB_OFFLINE=1). "
            f"Unset it on a machine with internet access. {_help(repo_id)}"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_disk(out)
    try:
        snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            local_dir=str(out),
            allow_patterns=ALLOW_PATTERNS,
        )
    except GatedRepoError as exc:
        raise RuntimeError(
            f"{repo_id} is gated: accept its licence on https://huggingface.co/{repo_id} and pass "
            f"a token of that account (HF_TOKEN or --token). {_help(repo_id)}"
        ) from exc
    except RevisionNotFoundError as exc:
        raise RuntimeError(f"{repo_id} has no revision {revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise RuntimeError(
            f"{repo_id} was not found or needs authentication. {_help(repo_id)}"
        ) from exc
    except (LocalEntryNotFoundError, ConnectionError, TimeoutError) as exc:
        raise RuntimeError(f"cannot reach the Hugging Face hub ({exc}). {_help(repo_id)}") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise RuntimeError(f"downloading {repo_id} failed: {exc}. {_help(repo_id)}") from exc

    try:
        hidden = int(
            json.loads((out / "config.json").read_text("utf-8"))["text_config"]["hidden_size"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{repo_id} did not provide a PaliGemma config.json: {exc}") from exc
    model_id = repo_id if revision is None else f"{repo_id}@{revision}"
    if init_head:
        _write_random_head(out, action_space, hidden, model_id)
    elif not (out / POLICY_FILE).is_file():
        PolicyConfig.create(action_space, hidden_size=hidden, model_id=model_id).save(out)
    if not init_head and not (out / HEAD_FILE).is_file():
        _LOG.warning(
            "%s has the backbone but no policy head yet: run `vla-ros import-robovlms CKPT "
            "--config CONFIG.json --backbone %s --out %s` to add trained weights",
            out,
            out,
            out,
        )
    return out


def _write_random_head(out: Path, action_space: str, hidden: int, model_id: str) -> None:
    import torch

    from vla_ros.policy.head import LSTMPolicyHead, save_head_weights
    from vla_ros.policy.model import UNTRAINED_HEAD_KEY

    config = PolicyConfig.create(
        action_space,
        hidden_size=hidden,
        model_id=f"{model_id} (UNTRAINED head)",
        extra={UNTRAINED_HEAD_KEY: True},
    )
    head = LSTMPolicyHead.from_config(config)
    config.save(out)
    save_head_weights(out / HEAD_FILE, torch.zeros(hidden), head)
    _LOG.warning(
        "wrote a RANDOM, UNTRAINED policy head to %s: its actions are noise. Use it only for "
        "bring-up tests with the safety node in place; never on a robot near people.",
        out / HEAD_FILE,
    )
