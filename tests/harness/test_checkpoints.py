"""Model selection over a run's history, and the label-free validators."""

from __future__ import annotations

import math

import pytest
import torch

from xbench.harness.evaluation import label_free_scores
from xbench.harness.checkpoints import select


def point(step, src_val, tgt_val, tgt_test, entropy, im):
    return {"step": step,
            "acc": {"s": {"val": src_val, "test": 0.9}, "t": {"val": tgt_val, "test": tgt_test}},
            "label_free": {"s": {"entropy": 0.1, "im": 1.0}, "t": {"entropy": entropy, "im": im}}}


HISTORY = [point(100, 0.70, 0.60, 0.55, 0.9, 0.5),
           point(200, 0.90, 0.50, 0.45, 0.3, 0.4),
           point(300, 0.80, 0.70, 0.65, 0.5, 0.9)]


def test_each_selector_reads_its_own_criterion():
    chosen = select(HISTORY, ("s",), ("t",))
    assert chosen["training_domain"]["step"] == 200      # best source val (0.90)
    assert chosen["training_domain"]["acc_target"] == 0.45
    assert chosen["last"]["step"] == 300
    assert chosen["oracle"]["step"] == 300               # best target val (0.70)
    assert chosen["oracle"]["oracle"] is True
    assert chosen["target_entropy"]["step"] == 200       # lowest target entropy (0.3)
    assert chosen["target_im"]["step"] == 300            # highest target IM (0.9)


def test_target_test_accuracy_never_changes_a_choice():
    """Canary: permuting target test accuracies moves no selection decision."""
    steps = {k: v["step"] for k, v in select(HISTORY, ("s",), ("t",)).items()}
    tests = [p["acc"]["t"]["test"] for p in HISTORY]
    for shift in (1, 2):
        permuted = [dict(p, acc={**p["acc"], "t": {"val": p["acc"]["t"]["val"],
                                                    "test": tests[(i + shift) % 3]}})
                    for i, p in enumerate(HISTORY)]
        assert {k: v["step"] for k, v in select(permuted, ("s",), ("t",)).items()} == steps


def test_label_free_scores_closed_forms():
    k = 4
    uniform = label_free_scores(torch.zeros(8, k))
    assert uniform["entropy"] == pytest.approx(math.log(k))      # H(uniform) = log K
    assert uniform["im"] == pytest.approx(0.0, abs=1e-6)         # log K - log K
    confident = label_free_scores(torch.eye(k).repeat(2, 1) * 100.0)
    assert confident["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert confident["im"] == pytest.approx(math.log(k))         # diverse and certain
    collapsed = label_free_scores(torch.tensor([[100.0, 0, 0, 0]] * 8))
    assert collapsed["im"] == pytest.approx(0.0, abs=1e-6)       # certain but not diverse
