"""Benchmark reports carry their conditions and spread; the README table is the JSON's."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros import bench
from vla_ros.cli import main

ROOT = Path(__file__).resolve().parents[1]
BENCH_SCRIPTS = sorted((ROOT / "test" / "bench").glob("bench_*.py"))


def test_a_busy_machine_is_flagged_and_a_quiet_one_is_not():
    busy = bench.conditions(load=[3.1, 2.0, 1.0], cpus=2)
    assert busy["busy"] is True
    assert "load average 3.10 on 2 CPUs" in busy["warning"]
    quiet = bench.conditions(load=[0.4, 0.5, 0.5], cpus=2)
    assert quiet["busy"] is False
    assert quiet["warning"] is None
    assert quiet["usable_cpus"] == 2
    assert quiet["load_average"] == [0.4, 0.5, 0.5]


@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_spread_brackets_the_median(values):
    s = bench.spread(values)
    assert s["min"] <= s["p10"] <= s["median"] <= s["p90"] <= s["max"]
    assert s["n"] == len(values)


def test_spread_of_nothing_is_refused():
    with pytest.raises(ValueError, match="no measurements"):
        bench.spread([])


def test_the_report_keeps_the_conditions_and_warns(tmp_path, capsys):
    started = bench.conditions(load=[9.0, 9.0, 9.0], cpus=2)
    path = bench.write_report(tmp_path / "x.json", {"median_ms": 1.0}, started)
    payload = json.loads(path.read_text())
    assert payload["median_ms"] == 1.0
    assert payload["conditions"]["busy"] is True
    assert len(payload["conditions"]["load_average_after"]) == 3
    assert "WARNING: machine busy" in capsys.readouterr().err


@pytest.mark.parametrize("script", BENCH_SCRIPTS, ids=lambda p: p.name)
def test_every_bench_script_samples_the_machine_and_writes_through_the_report(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    calls = {
        f"{node.func.value.id}.{node.func.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
    }
    assert "bench.conditions" in calls, f"{script.name} does not record the load before it runs"
    assert "bench.write_report" in calls, f"{script.name} writes its JSON without conditions"


SAMPLE = {
    "tiny": {
        "torch eager": {
            "trunk_ms": 88.0,
            "trunk_p10_ms": 85.0,
            "trunk_p90_ms": 95.0,
            "rss_mb": 377.0,
            "speedup_vs_torch": 1.0,
        },
        "onnxruntime fp32": {
            "trunk_ms": 22.0,
            "trunk_p10_ms": 21.0,
            "trunk_p90_ms": 25.0,
            "rss_mb": 384.0,
            "speedup_vs_torch": 4.0,
            "cosine_min": 1.0,
            "action_nrmse": 1e-9,
            "action_max_abs": 1e-8,
            "gripper_agree": True,
        },
    },
    "conditions": bench.conditions(load=[0.1, 0.2, 0.3], cpus=2),
}


def test_the_table_shows_medians_spread_and_conditions():
    table = bench.backends_table(SAMPLE)
    assert "| tiny | onnxruntime fp32 | 22 (21-25) | 4.00 | 1.000000 |" in table
    assert "Conditions: 2 CPUs, load average 0.10 / 0.20 / 0.30" in table
    busy = {**SAMPLE, "conditions": bench.conditions(load=[5.0, 5.0, 5.0], cpus=2)}
    assert "busy machine" in bench.backends_table(busy)


def test_tables_command_regenerates_only_the_marked_block(tmp_path):
    source = tmp_path / "out"
    source.mkdir()
    (source / "bench_backends.json").write_text(json.dumps(SAMPLE))
    readme = tmp_path / "README.md"
    block = "<!-- bench-backends -->\nold table\n<!-- /bench-backends -->"
    readme.write_text(f"before\n{block}\nafter\n")
    argv = ["bench", "tables", "--json", str(source), "--readme", str(readme)]
    assert main([*argv, "--archive", str(tmp_path / "kept")]) == 0
    text = readme.read_text()
    assert text.startswith("before\n<!-- bench-backends -->\n| model |")
    assert text.endswith("\n<!-- /bench-backends -->\nafter\n")
    assert "old table" not in text
    assert json.loads((tmp_path / "kept" / "bench_backends.json").read_text()) == SAMPLE
    assert main([*argv, "--archive", str(tmp_path / "kept")]) == 0
    assert readme.read_text() == text, "regenerating twice changes nothing"

    readme.write_text("no markers here\n")
    assert main([*argv, "--archive", str(tmp_path / "kept")]) == 2
    assert main(["bench", "tables", "--json", str(tmp_path / "none"), "--readme", str(readme)]) == 2


def test_the_readme_backend_table_is_the_archived_json():
    archived = ROOT / "docs" / "bench" / "bench_backends.json"
    results = json.loads(archived.read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert bench.replace_block(readme, bench.BACKENDS_TABLE, bench.backends_table(results)) == (
        readme
    ), "README's backend table differs from docs/bench/bench_backends.json: make bench-tables"
    assert "conditions" in results, "the archived run does not say under which load it ran"
