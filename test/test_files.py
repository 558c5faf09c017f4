"""The shared reader for user-supplied YAML/JSON files: every failure names the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_ros.bag.io import BagError
from vla_ros.files import read_mapping


def test_reads_yaml_and_json_mappings(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("x: 1\n", encoding="utf-8")
    (tmp_path / "b.json").write_text('{"y": [1, 2]}', encoding="utf-8")
    assert read_mapping(tmp_path / "a.yaml", "m", "things") == {"x": 1}
    assert read_mapping(tmp_path / "b.json", "m", "things") == {"y": [1, 2]}


def test_missing_file_says_what_it_was_for(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"absent\.yaml is missing: no limits"):
        read_mapping(tmp_path / "absent.yaml", "no limits", "things")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "x: [1,\n", "not valid YAML"),
        ("bad.json", "{", "not valid JSON"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping of node sections"),
        ("empty.yaml", "", "expected a mapping of node sections"),
    ],
)
def test_bad_content_raises_the_callers_error_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BagError, match=message) as raised:
        read_mapping(path, "m", "node sections", BagError)
    assert str(path) in str(raised.value)
