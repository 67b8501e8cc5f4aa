"""Model selection over the evaluation history of one job.

Each evaluation point holds accuracies per domain and split. A selection
method picks one point while reading only what it is allowed to read:

* ``training_domain``: mean validation accuracy of the source domains;
* ``last``: the final point;
* ``oracle``: mean validation accuracy of the target domains (labelled as an
  oracle wherever it appears; it reads target *validation* labels, never test).

Target test accuracy is read only after the choice, to score it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

DEFAULT = "training_domain"
ORACLES = frozenset({"oracle"})


def _mean(point: dict[str, Any], domains: tuple[str, ...], split: str) -> float:
    return float(np.mean([point["acc"][d][split] for d in domains]))


def _training_domain(history, source, target) -> int:
    scores = [_mean(p, source, "val") for p in history]
    return int(np.argmax(scores))


def _last(history, source, target) -> int:
    return len(history) - 1


def _oracle(history, source, target) -> int:
    scores = [_mean(p, target, "val") for p in history]
    return int(np.argmax(scores))


SELECTORS: dict[str, Callable[..., int]] = {
    "training_domain": _training_domain, "last": _last, "oracle": _oracle}


def select(history: list[dict[str, Any]], source: tuple[str, ...],
           target: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """For each selection method: the chosen step and the scores at that step."""
    out = {}
    for name, choose in SELECTORS.items():
        point = history[choose(_without_target_test(history, target), source, target)]
        test = [point["acc"][d]["test"] for d in target]
        out[name] = {"step": point["step"],
                     "acc_source_val": _mean(point, source, "val"),
                     "acc_target": float(np.mean(test)),
                     "acc_target_worst": float(np.min(test)),
                     "oracle": name in ORACLES}
    return out


def _without_target_test(history: list[dict[str, Any]], target: tuple[str, ...]) -> list:
    """A copy of ``history`` with target test accuracies removed, so selectors cannot see them."""
    return [{"step": p["step"],
             "acc": {d: {s: v for s, v in splits.items() if not (d in target and s == "test")}
                     for d, splits in p["acc"].items()}} for p in history]
