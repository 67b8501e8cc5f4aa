"""The shipped `gate` suite keeps the design its power calculation assumes."""

from __future__ import annotations

from xbench.harness.suite import load_suite
from xbench.registry import load_task


def test_gate_suite_design():
    suite = load_suite("gate")
    assert len(suite.seeds) >= 10 and len(set(suite.seeds)) == len(suite.seeds)
    assert 1 <= len(suite.methods) <= 4
    assert suite.timing_unstable == []
    for entry in suite.tasks:
        assert entry.name == "mnist1d_shift"


def test_gate_suite_target_test_splits_hold_2000_items():
    for entry in load_suite("gate").tasks:
        task = load_task(entry.name, **entry.options)
        (domain,) = entry.targets[0] if entry.targets else task.default_target
        assert len(task.build()[domain]["test"].y) >= 2000, entry.name
