"""How far one suite's ranking agrees with another's: Kendall's tau of control-relative scores.

``quick`` is a 90-second smoke run; ``standard`` is the leaderboard. Issue 13 asks how far the
quick check can be trusted. For every method that both reports rank against the same control
under the same protocol, its score is its mean accuracy minus the control's, averaged over the
tasks of that protocol where both have a complete cell (training-domain selection). Kendall's
tau (``scipy.stats.kendalltau``, tau-b; exact p-value for small n) is computed between the two
suites' scores over the methods in both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from xbench.analysis import stats


def relative_scores(analyses: list[Any], selection: str = "training_domain") -> pd.DataFrame:
    """One row per (protocol, method) other than the control: ``score`` (mean over tasks of
    method minus control, accuracy as a fraction), ``tasks`` (how many), ``control``."""
    rows = []
    for a in analyses:
        if a.selection != selection or not a.control:
            continue
        table = stats.wide(a.cells)
        if a.control not in table.index:
            continue
        base = table.loc[a.control]
        oracles = set(a.aggregate.loc[a.aggregate["oracle"], "method"])
        for method in table.index:
            if method == a.control or method in oracles:
                continue
            diff = (table.loc[method] - base).dropna()
            if len(diff):
                rows.append((a.protocol, method, float(diff.mean()), len(diff), a.control))
    return pd.DataFrame(rows, columns=["protocol", "method", "score", "tasks", "control"])


def kendall(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
    """Kendall's tau-b between the scores of the (protocol, method) pairs in both frames, with
    its two-sided p-value, n, and the share of pairs on the same side of the control."""
    both = a.merge(b, on=["protocol", "method"], suffixes=("_a", "_b"))
    n = len(both)
    if n < 2:
        return {"tau": math.nan, "p": math.nan, "n": n, "same_sign": math.nan, "pairs": both}
    result = scipy_stats.kendalltau(both["score_a"], both["score_b"])
    same = float(np.mean(np.sign(both["score_a"]) == np.sign(both["score_b"])))
    return {"tau": float(result.statistic), "p": float(result.pvalue), "n": n,
            "same_sign": same, "pairs": both}
