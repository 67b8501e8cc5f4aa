"""Learning curves: does a budget converge? Source-validation accuracy at each evaluation step.

Issue 13 asks that each task's budget be long enough for ERM's source-validation accuracy to
have plateaued, and that the evidence be shown. This module reads the evaluation history every
record keeps (no target data: only the source domains' validation splits) and gives, per task,
the curve averaged over seeds (each seed first averaged over the targets it was run with), and
the gain over the last evaluation interval (the last two evaluation points) with a 95% interval
over seeds -- the unit of replication is a trained model, so the interval is over seeds, not
evaluation points.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from xbench.analysis import stats

def _source_val_curve(history: Any, targets: list[str]) -> dict[int, float]:
    """step -> mean validation accuracy over the source domains (the target's never read)."""
    curve = {}
    for point in history or []:
        acc = point.get("acc") or {}
        sources = [d for d in acc if d not in targets and "val" in (acc[d] or {})]
        if sources and point.get("step") is not None:
            curve[int(point["step"])] = float(np.mean([acc[d]["val"] for d in sources]))
    return curve


def _targets(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t for t in value.split("+") if t]
    return [str(t) for t in (value or [])]


def learning_curves(df: pd.DataFrame, method: str = "erm") -> pd.DataFrame:
    """Per (protocol, task, seed, step): ``method``'s source-validation accuracy, the mean over
    the targets the task was run with. Default-hyper-parameter main runs that succeeded only;
    a step some target of a seed lacks is dropped for that seed."""
    columns = ["protocol", "task", "seed", "step", "acc"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    mine = df[(df["method"] == method) & (df["status"] == "ok") & (df["trial"] == 0)
              & (df["holdout"].map(len) == 0)]
    task_column = "task_group" if "task_group" in mine else "task"
    rows = []
    for (protocol, task, seed), runs in mine.groupby(["protocol", task_column, "seed"]):
        curves = [_source_val_curve(h, _targets(t))
                  for h, t in zip(runs["history"], runs["target"])]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        rows += [(protocol, task, seed, step, float(np.mean([c[step] for c in curves])))
                 for step in steps]
    return pd.DataFrame(rows, columns=columns)


def plateau(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, task): the mean curve over seeds, and the paired per-seed gain from the
    second-to-last evaluation point to the last (mean, 95% t half-width, seeds). ``rising``
    is True when the whole interval is above zero."""
    columns = ["protocol", "task", "curve", "seeds", "from_step", "to_step", "gain", "ci",
               "rising"]
    rows = []
    for (protocol, task), group in curves.groupby(["protocol", "task"]):
        per_seed = group.pivot(index="seed", columns="step", values="acc").dropna(axis=1)
        if per_seed.empty:
            continue
        steps = list(per_seed.columns)
        last = steps[-1]
        start = steps[-2] if len(steps) > 1 else last
        gain = stats.mean_ci((per_seed[last] - per_seed[start]).tolist())
        rising = bool(gain["n"] >= 2 and gain["mean"] - gain["ci"] > 0)
        rows.append((protocol, task, per_seed.mean().to_dict(), len(per_seed), start, last,
                     gain["mean"], gain["ci"], rising))
    return pd.DataFrame(rows, columns=columns)


def verdict(row: Any) -> str:
    """``flat`` / ``still rising`` with the gain and its interval, in accuracy points."""
    if row["from_step"] == row["to_step"]:
        return "one evaluation point: cannot tell"
    gain = 100 * row["gain"]
    if math.isnan(row["ci"]):
        return f"{gain:+.1f} points (one seed: no interval)"
    lo, hi = gain - 100 * row["ci"], gain + 100 * row["ci"]
    words = "still rising" if row["rising"] else "flat"
    return f"{words}: {gain:+.1f} points from step {row['from_step']} to {row['to_step']} " \
           f"(95% CI {lo:+.1f} to {hi:+.1f}, {row['seeds']} seeds)"
