"""Model selection over the evaluation history of one job.

Each evaluation point holds accuracies per domain and split. A selection
method picks one point while reading only what it is allowed to read:

* ``training_domain``: mean validation accuracy of the source domains;
* ``last``: the final point;
* ``oracle``: mean validation accuracy of the target domains (labelled as an
  oracle wherever it appears; it reads target *validation* labels, never test);
* label-free validators for UDA, reading target validation *inputs* only:
  ``target_entropy`` (lowest mean prediction entropy) and ``target_im``
  (highest information maximisation); source validation accuracy is
  ``training_domain``.

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


def _label_free(history, target, key) -> list[float]:
    return [float(np.mean([p["label_free"][d][key] for d in target])) for p in history]


def _target_entropy(history, source, target) -> int:
    return int(np.argmin(_label_free(history, target, "entropy")))


def _target_im(history, source, target) -> int:
    return int(np.argmax(_label_free(history, target, "im")))


SELECTORS: dict[str, Callable[..., int]] = {
    "training_domain": _training_domain, "last": _last, "oracle": _oracle,
    "target_entropy": _target_entropy, "target_im": _target_im}


def applicable(history: list[dict[str, Any]]) -> list[str]:
    """Selection methods this history supports (label-free ones need recorded scores)."""
    has_label_free = all(p.get("label_free") for p in history)
    return [n for n in SELECTORS if has_label_free or n not in ("target_entropy", "target_im")]


def select(history: list[dict[str, Any]], source: tuple[str, ...],
           target: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """For each selection method: the chosen step and the scores at that step."""
    out = {}
    visible = _without_target_test(history, target)
    for name in applicable(history):
        point = history[SELECTORS[name](visible, source, target)]
        test = [point["acc"][d]["test"] for d in target]
        out[name] = {"step": point["step"],
                     "acc_source_val": _mean(point, source, "val"),
                     "acc_target": float(np.mean(test)),
                     "acc_target_worst": float(np.min(test)),
                     "oracle": name in ORACLES}
    return out


def _without_target_test(history: list[dict[str, Any]], target: tuple[str, ...]) -> list:
    """A copy of ``history`` with target test accuracies removed, so selectors cannot see them."""
    return [{"step": p["step"], "label_free": p.get("label_free"),
             "acc": {d: {s: v for s, v in splits.items() if not (d in target and s == "test")}
                     for d, splits in p["acc"].items()}} for p in history]
