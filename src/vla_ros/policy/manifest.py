"""`manifest.json` of an ONNX export: what the graphs are, what they came from, how close they are.

Written by `vla-ros export` after parity passed, read by the graph backends before they load a
graph. The source hash covers the files baked into the graphs (`config.json` and the backbone
weights); a graph next to weights that changed since the export is refused, never run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
FORMAT = "vla_ros-onnx"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_CHUNK = 1 << 22


class StaleExportError(ValueError):
    """The ONNX export was made from other weights than the model directory now holds."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MB chunks (3B weights never sit in memory for this)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def source_files(model_dir: str | Path) -> list[Path]:
    """The model files the graphs are built from: config.json and the backbone safetensors."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    files = [model_dir / "config.json"]
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{index}: no readable weight_map ({exc!r})") from exc
        files += [index, *(model_dir / name for name in shards)]
    else:
        files.append(model_dir / "model.safetensors")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the model directory")
    return files


def source_hash(model_dir: str | Path) -> dict[str, Any]:
    """{"sha256": combined, "files": {name: sha256}} of `source_files`."""
    files = {path.name: sha256_file(path) for path in source_files(model_dir)}
    combined = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"sha256": combined, "files": files}


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX graph: file, checksum, static input/output shapes and dtypes, its weight file."""

    file: str
    sha256: str
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    data: str = ""
    data_bytes: int = 0
    text_len: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GraphEntry:
        return cls(**{key: raw[key] for key in cls.__dataclass_fields__ if key in raw})


@dataclass(frozen=True)
class ExportManifest:
    """The contents of `manifest.json`."""

    precision: str
    opset: int
    hidden_size: int
    num_image_tokens: int
    image_size: int
    source: dict[str, Any]
    vision: GraphEntry
    prefix: tuple[GraphEntry, ...]
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def buckets(self) -> tuple[int, ...]:
        return tuple(entry.text_len for entry in self.prefix)

    def graph(self, text_len: int) -> GraphEntry:
        for entry in self.prefix:
            if entry.text_len == text_len:
                return entry
        raise KeyError(text_len)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ExportManifest:
        """Read and check `manifest.json` (format, precision, every graph file present)."""
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: no ONNX export here. Run `vla-ros export MODEL_DIR "
                f"--format onnx --out {directory}` first"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"format {raw.get('format')!r} v{raw.get('format_version')!r}, this vla_ros "
                    f"reads {FORMAT!r} v{FORMAT_VERSION}"
                )
            manifest = cls(
                precision=raw["precision"],
                opset=int(raw["opset"]),
                hidden_size=int(raw["hidden_size"]),
                num_image_tokens=int(raw["num_image_tokens"]),
                image_size=int(raw["image_size"]),
                source=dict(raw["source"]),
                vision=GraphEntry.from_dict(raw["vision"]),
                prefix=tuple(GraphEntry.from_dict(entry) for entry in raw["prefix"]),
                parity=dict(raw.get("parity", {})),
                quantization=dict(raw.get("quantization", {})),
                versions=dict(raw.get("versions", {})),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a valid export manifest: {exc}") from exc
        if manifest.precision not in PRECISIONS:
            raise ValueError(f"{path}: precision {manifest.precision!r} not in {PRECISIONS}")
        if not manifest.prefix:
            raise ValueError(f"{path}: no prefix graphs listed")
        return manifest

    def verify(self, directory: str | Path, model_dir: str | Path) -> None:
        """Refuse missing or altered graph files and a model directory with other weights.

        Graph files are checked by sha256, weight files by size (a full hash of several GB of
        ONNX weights would double the start-up time; the source weights are hashed in full).
        """
        directory = Path(directory)
        for entry in (self.vision, *self.prefix):
            graph = directory / entry.file
            if not graph.is_file():
                raise FileNotFoundError(f"{graph} is missing (listed in {MANIFEST_FILE})")
            if sha256_file(graph) != entry.sha256:
                raise ValueError(f"{graph}: checksum differs from {MANIFEST_FILE}; re-export")
            if entry.data:
                data = directory / entry.data
                if not data.is_file():
                    raise FileNotFoundError(f"{data} is missing (weights of {entry.file})")
                if data.stat().st_size != entry.data_bytes:
                    raise ValueError(
                        f"{data}: {data.stat().st_size} bytes, {MANIFEST_FILE} says "
                        f"{entry.data_bytes}; re-export"
                    )
        current = source_hash(model_dir)
        if current["sha256"] != self.source.get("sha256"):
            changed = sorted(
                name
                for name in set(current["files"]) | set(self.source.get("files", {}))
                if current["files"].get(name) != self.source.get("files", {}).get(name)
            )
            raise StaleExportError(
                f"{directory} is stale: it was exported from other weights than {model_dir} "
                f"holds now (changed: {', '.join(changed)}). Re-run `vla-ros export "
                f"{model_dir} --format onnx --out {directory}`"
            )
