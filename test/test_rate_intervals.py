"""Every rate the evaluation reports carries a Wilson 95 % interval."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.core.stats import wilson_interval


@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_the_interval_holds_the_rate_and_stays_in_the_unit_range(counts):
    successes, trials = counts
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials <= high <= 1.0


def test_known_values_and_more_episodes_narrow_it():
    low, high = wilson_interval(157, 160)
    assert (round(low, 3), round(high, 3)) == (0.946, 0.994)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    narrow, wide = wilson_interval(98, 100), wilson_interval(49, 50)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_the_eval_summary_and_the_train_demo_report_show_the_intervals():
    from vla_ros.evaluate import _with_interval
    from vla_ros.learn import pipeline

    summary = {
        "success_rate": 0.975,
        "collision_rate": 0.0,
        "intervals_95": {"success_rate": [0.868, 0.996], "collision_rate": [0.0, 0.088]},
    }
    assert _with_interval(summary, "success_rate") == "98% [87%-100%]"
    row = {"success_rate": 0.975, "intervals_95": {"success_rate": [0.868, 0.996]}}
    assert pipeline._rate(row, "success_rate") == "97.5% [86.8%, 99.6%]"
    assert pipeline._rate({"success_rate": 0.5}, "success_rate") == "50.0%"


def test_every_rate_of_an_eval_aggregate_has_its_interval():
    from vla_ros.evaluate import EpisodeRecord, aggregate

    def record(success: bool) -> EpisodeRecord:
        result = {
            "success": success,
            "collision": not success,
            "compliant": True,
            "timeout": False,
            "spl": 1.0 if success else 0.0,
            "time_s": 10.0,
            "path_length_m": 2.0,
        }
        return EpisodeRecord("s", 0, "en", result, 100, 15, [], 0.0, "bag")

    summary = aggregate([record(True)] * 39 + [record(False)])
    intervals = summary["intervals_95"]
    rates = {"success_rate", "collision_rate", "compliance_rate", "timeout_rate"}
    assert set(intervals) == rates
    for rate in rates:
        low, high = intervals[rate]
        assert low <= summary[rate] <= high
    assert intervals["success_rate"] == [round(b, 4) for b in wilson_interval(39, 40)]
