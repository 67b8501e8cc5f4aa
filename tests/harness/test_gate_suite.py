"""The shipped `gate` suite keeps the design its power calculation assumes."""

from __future__ import annotations

import pytest
import torch

from xbench.harness.suite import load_suite
from xbench.registry import load_task
from xbench.tasks.base import split_indices


def test_gate_suite_design():
    suite = load_suite("gate")
    assert len(suite.seeds) >= 10 and len(set(suite.seeds)) == len(suite.seeds)
    assert 1 <= len(suite.methods) <= 4
    assert suite.timing_unstable == []
    for entry in suite.tasks:  # every domain is split 60/20/20
        assert entry.name == "mnist1d_shift"
        parts = split_indices(entry.options["n_per_domain"], (0.6, 0.2, 0.2),
                              torch.Generator().manual_seed(0))
        assert len(parts[2]) >= 1000


@pytest.mark.slow
def test_gate_suite_target_test_splits_hold_1000_items():
    for entry in load_suite("gate").tasks:
        task = load_task(entry.name, **entry.options)
        (domain,) = entry.targets[0] if entry.targets else task.default_target
        assert len(task.build()[domain]["test"].y) >= 1000, entry.name
