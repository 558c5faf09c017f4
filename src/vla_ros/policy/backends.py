"""Trunk backends by name: a new backend is one `register` call here plus its module.

Torch-free on purpose: nodes and CLIs check their `backend` parameter against `BACKENDS` without
importing torch, and `trunk.load_trunk` imports only the module of the backend asked for (so the
backends, which build on `trunk.GraphTrunk`, are never imported by the module they build on).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Backend:
    """`loader` is "module:attribute". A graph backend (`graphs`, it runs what `vla-ros export`
    wrote) is called as loader(model_dir, graphs_dir, device, action_token), the others as
    loader(model_dir, device, dtype, action_token); each returns a `trunk.Trunk`."""

    name: str
    loader: str
    graphs: bool

    def load(self, *args: Any) -> Any:
        module, _, attribute = self.loader.partition(":")
        target: Any = importlib.import_module(module)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target(*args)


REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in REGISTRY:
        raise ValueError(f"backend {backend.name!r} is registered already")
    REGISTRY[backend.name] = backend
    return backend


register(Backend("torch", "vla_ros.policy.backbone:PaliGemmaBackbone.load", graphs=False))
register(Backend("onnxruntime", "vla_ros.policy.ort_backend:OrtTrunk.load", graphs=True))
register(Backend("tensorrt", "vla_ros.policy.trt_backend:TrtTrunk.load", graphs=True))

BACKENDS = tuple(REGISTRY)
"""The built-in backends' names: the choices of every `backend` parameter and option."""
