"""Cheap structural checks of a model directory's files before anything heavy reads them.

A truncated download or a corrupt copy otherwise surfaces as a traceback from deep inside
safetensors, tokenizers or transformers. These checks read only headers and small JSON files and
raise `ModelFileError` with one line that names the file and what is wrong. They cannot see a
flipped bit inside tensor data (safetensors has no checksum); a directory that ships a
`SHA256SUMS` file (`sha256sum` format, e.g. the reference policies) is also checked against it,
so an altered file is named as well. The loaders' own checks still apply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from vla_ros.policy.config import HEAD_FILE, PolicyConfig

JSON_FILES = (
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "model.safetensors.index.json",
)
"""JSON files a PaliGemma directory may hold; each present one must parse to an object."""
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
MAX_HEADER_BYTES = 100_000_000
"""safetensors refuses larger headers too."""
CHECKSUM_FILE = "SHA256SUMS"
"""`sha256sum` output for the directory's files; `sha256sum -c SHA256SUMS` checks it too."""
_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S.*)$")


class ModelFileError(ValueError):
    """A model directory file that is truncated, corrupt or inconsistent; one-line message."""


def _fail(path: Path, problem: str) -> ModelFileError:
    return ModelFileError(f"{path}: {' '.join(problem.split())}")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; ModelFileError naming the file otherwise."""
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text (corrupt?): byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON (truncated or corrupt?): {exc}") from exc
    if not isinstance(raw, dict):
        raise _fail(path, f"expected a JSON object at the top level, got {type(raw).__name__}")
    return raw


def check_safetensors(path: Path) -> dict[str, Any]:
    """Validate a safetensors header against the file size; returns the tensor table."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise _fail(path, f"truncated: {size} bytes, too short for a safetensors header")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise _fail(
                path,
                f"truncated or not safetensors: header of {header_len} bytes declared, "
                f"file has {size} bytes",
            )
        header_bytes = stream.read(header_len)
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise _fail(path, "corrupt safetensors header: not a JSON object")
    data_bytes = size - 8 - header_len
    end_max = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            expected = math.prod(shape) * DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(path, f"corrupt safetensors entry for tensor {name!r}: {exc!r}") from exc
        if not 0 <= begin <= end or end - begin != expected:
            raise _fail(path, f"tensor {name!r}: offsets {begin}..{end} do not fit {dtype} {shape}")
        end_max = max(end_max, end)
    if end_max > data_bytes:
        raise _fail(
            path,
            f"truncated: tensors need {end_max} bytes of data, the file holds {data_bytes} "
            f"({size} bytes in all)",
        )
    if end_max < data_bytes:
        raise _fail(path, f"{data_bytes - end_max} trailing bytes after the last tensor")
    return header


def _check_config(path: Path) -> None:
    """The fields the loader and the FLOP count read; a default would silently stand in."""
    if not path.is_file():
        return
    config = read_json_object(path)
    for section in ("text_config", "vision_config"):
        if not isinstance(config.get(section), dict):
            raise _fail(path, f"{section} is missing or not an object (not a PaliGemma config)")
    hidden = config["text_config"].get("hidden_size")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise _fail(path, f"text_config.hidden_size must be a positive integer, got {hidden!r}")


def _check_tokenizer(path: Path) -> None:
    """Parse it the way transformers will (the Rust tokenizers library), errors on one line."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for every parse error
        raise _fail(path, f"not a valid tokenizers file: {exc}") from exc


def weight_files(model_dir: Path) -> list[Path]:
    """The backbone's safetensors files (single or sharded) plus the policy head file."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise _fail(index, "weight_map must be a non-empty object of tensor -> shard file")
        names = sorted(set(map(str, weight_map.values())))
        files = [model_dir / name for name in names]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise _fail(index, f"names shard {missing[0].name}, which is missing")
    else:
        files = [model_dir / "model.safetensors"]
    return [*files, model_dir / HEAD_FILE]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(model_dir: str | Path) -> Path:
    """Record every file of the directory in SHA256SUMS (sorted; subdirectories and the model
    card, which no loader reads, left out)."""
    path = Path(model_dir)
    skipped = {CHECKSUM_FILE, "README.md"}
    names = sorted(p.name for p in path.iterdir() if p.is_file() and p.name not in skipped)
    lines = [f"{file_sha256(path / name)}  {name}\n" for name in names]
    target = path / CHECKSUM_FILE
    target.write_text("".join(lines), encoding="utf-8")
    return target


def check_checksums(model_dir: str | Path) -> None:
    """Where SHA256SUMS exists, every file it lists must exist and match, else ModelFileError."""
    path = Path(model_dir)
    sums = path / CHECKSUM_FILE
    if not sums.is_file():
        return
    try:
        text = sums.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(sums, f"not UTF-8 text (corrupt?): byte {exc.start}") from exc
    entries = [line for line in text.splitlines() if line.strip()]
    if not entries:
        raise _fail(sums, "empty: it lists no file")
    for number, line in enumerate(entries, 1):
        match = _CHECKSUM_LINE.match(line)
        if match is None:
            raise _fail(sums, f"line {number} is not `<sha256>  <file>`: {line[:80]!r}")
        expected, name = match.groups()
        target = path / name
        if "/" in name or not target.is_file():
            raise _fail(target, f"listed in {CHECKSUM_FILE} but missing")
        if file_sha256(target) != expected:
            raise _fail(
                target,
                f"altered: its sha256 does not match {CHECKSUM_FILE} (a damaged or edited copy; "
                "restore the file or fetch the directory again)",
            )


def check_model_files(model_dir: str | Path) -> None:
    """Raise ModelFileError naming the first truncated, corrupt, altered or unreadable model
    file."""
    path = Path(model_dir)
    try:
        PolicyConfig.load(path)
    except ModelFileError:
        raise
    except ValueError as exc:
        raise ModelFileError(" ".join(str(exc).split())) from exc
    for name in JSON_FILES:
        if (path / name).is_file():
            read_json_object(path / name)
    _check_config(path / "config.json")
    if (path / "tokenizer.json").is_file():
        _check_tokenizer(path / "tokenizer.json")
    tokenizer_model = path / "tokenizer.model"
    if tokenizer_model.is_file() and tokenizer_model.stat().st_size == 0:
        raise _fail(tokenizer_model, "empty file (truncated?)")
    for weights in weight_files(path):
        if weights.is_file():
            check_safetensors(weights)
    check_checksums(path)
