"""Report plots with matplotlib (headless Agg backend), as PNG bytes or files.

Per selection method:

* ``accuracy_vs_cost``: mean target accuracy across the common tasks (95%
  t-interval, see :func:`xbench.analysis.stats.mean_of_means_ci`) against median train samples/s, one panel per device (cost is
  never compared across devices unless pooled on purpose), Pareto front drawn;
* ``domains``: heatmap of mean target test accuracy, methods x (task / target
  domain); its colour scale is set by the ranked rows (oracle rows are drawn
  but clipped to it, so they cannot wash the others out);
* ``ranks``: critical-difference diagram: average ranks over tasks, the
  Nemenyi critical difference, and bars joining methods whose ranks differ by
  less than it (Friedman test result in the title); drawn only over two or more
  tasks (ranks over a single task are that task's order, not a rank analysis).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from xbench.analysis.report import Analysis, Report

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight",
                metadata={"Software": None})
    _pyplot().close(fig)
    return buffer.getvalue()


def accuracy_vs_cost(a: "Analysis", across_devices: bool = False) -> bytes | None:
    """Accuracy (with CI) vs train throughput per device, Pareto front highlighted."""
    from xbench.analysis.report import pareto_frame

    frame = pareto_frame(a, across_devices)
    frame = frame[frame["accuracy"].notna() & frame["train_samples_per_s"].notna()]
    if frame.empty:
        return None
    plt = _pyplot()
    devices = sorted(frame["device"].unique())
    fig, axes = plt.subplots(1, len(devices), figsize=(5.5 * len(devices), 4.2), squeeze=False)
    for ax, device in zip(axes[0], devices):
        group = frame[frame["device"] == device].sort_values("train_samples_per_s")
        y = 100 * group["accuracy"].to_numpy()
        half = 100 * group["accuracy_ci"].to_numpy(dtype=float)
        err = np.vstack([np.nan_to_num(half), np.nan_to_num(half)])
        x = group["train_samples_per_s"].to_numpy()
        front = group["front"].to_numpy(dtype=bool)
        ax.errorbar(x[~front], y[~front], yerr=err[:, ~front], fmt="o", color="0.55",
                    capsize=3, label="dominated")
        ax.errorbar(x[front], y[front], yerr=err[:, front], fmt="o", color="tab:red",
                    capsize=3, label="Pareto-optimal")
        ax.plot(x[front], y[front], "-", color="tab:red", alpha=0.6)
        for xi, yi, name in zip(x, y, group["method"]):
            ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("train samples/s (median, log scale)")
        ax.set_ylabel("mean target accuracy across tasks (%)")
        ax.set_title(str(device), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Accuracy vs train cost; selection: {a.selection}; {a.protocol}"
                 + (" (ORACLE)" if a.oracle else ""), fontsize=10)
    return _png(fig)


def domain_heatmap(a: "Analysis") -> bytes | None:
    """Methods x (task / target domain) mean target test accuracy."""
    from xbench.analysis.report import domain_matrix

    matrix = domain_matrix(a)
    if matrix.empty:
        return None
    plt = _pyplot()
    values = 100 * matrix.to_numpy(dtype=float)
    oracle = set(a.aggregate.loc[a.aggregate["oracle"], "method"])
    ranked = np.array([m not in oracle for m in matrix.index])
    scale = values[ranked] if ranked.any() and not np.isnan(values[ranked]).all() else values
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * matrix.shape[1], 1.2 + 0.45 * matrix.shape[0]))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto",
                      vmin=float(np.nanmin(scale)), vmax=float(np.nanmax(scale)))
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=45,
                  ha="right", fontsize=8)
    ax.set_yticks(range(matrix.shape[0]), [str(m) for m in matrix.index], fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not math.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < np.nanmean(scale) else "black")
    fig.colorbar(image, ax=ax, label="target test accuracy (%)")
    ax.set_title(f"Per-domain accuracy; selection: {a.selection}; {a.protocol}"
                 + (" (ORACLE)" if a.oracle else ""), fontsize=10)
    return _png(fig)


def rank_diagram(a: "Analysis") -> bytes | None:
    """Critical-difference diagram (average ranks, Nemenyi CD, cliques of tied methods)."""
    agg = a.aggregate[a.aggregate["rank"].notna()].sort_values("rank")
    if len(agg) < 2 or len(a.common) < 2:
        return None
    plt = _pyplot()
    ranks = agg["rank"].to_numpy(dtype=float)
    names = agg["method"].tolist()
    k = len(ranks)
    cd = a.friedman.get("cd", math.nan) if a.friedman else math.nan
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.32 * k))
    right = max(k, 1 + cd) if not math.isnan(cd) else k
    ax.set_xlim(right + 0.5, 0.5)  # rank 1 (best) on the right, as in Demsar (2006)
    ax.set_ylim(-(k + 2), 2.2)
    ax.hlines(0, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.25, color="black")
        ax.text(r, 0.45, str(r), ha="center", fontsize=8)
    for i, (rank, name) in enumerate(zip(ranks, names)):
        y = -(i + 1)
        ax.plot([rank, rank], [0, y], color="tab:blue", lw=1)
        worse_half = rank > (k + 1) / 2  # labelled on the left (the axis is reversed)
        end = right + 0.4 if worse_half else 0.6
        ax.plot([rank, end], [y, y], color="tab:blue", lw=1)
        ax.text(end + (0.05 if worse_half else -0.05), y, f"{name} ({rank:.2f})",
                ha="right" if worse_half else "left", va="center", fontsize=8)
    if not math.isnan(cd):
        ax.plot([1, 1 + cd], [1.4, 1.4], color="tab:red", lw=2)
        ax.text(1 + cd / 2, 1.6, f"CD = {cd:.2f}", ha="center", fontsize=8, color="tab:red")
        # cliques: maximal runs of methods whose rank spread is below the CD
        cliques = []
        for i in range(k):
            j = i
            while j + 1 < k and ranks[j + 1] - ranks[i] < cd:
                j += 1
            if j > i and not any(s <= i and j <= e for s, e in cliques):
                cliques.append((i, j))
        for n, (i, j) in enumerate(cliques):
            y = -0.35 - 0.25 * n
            ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="black", lw=3)
    ax.axis("off")
    f = a.friedman or {}
    subtitle = (f"Friedman chi2 = {f['statistic']:.2f}, p = {f['pvalue']:.3g}; "
                f"{f['k']} methods x {f['n']} tasks" if f and not math.isnan(
                    f.get("statistic", math.nan)) else "Friedman test needs >= 3 methods, 2 tasks")
    ax.set_title(f"Average rank (1 = best); selection: {a.selection}; {a.protocol}"
                 + (" (ORACLE)" if a.oracle else "") + f"\n{subtitle}", fontsize=9)
    return _png(fig)


def figures(rep: "Report") -> dict[str, bytes]:
    """``{file name: PNG bytes}`` for every analysis of a report."""
    import matplotlib

    from xbench.names import safe_filename

    out: dict[str, bytes] = {}
    with matplotlib.rc_context({"text.parse_math": False}):  # record strings are not mathtext
        for a in rep.analyses:
            for kind, data in (("accuracy_vs_cost", accuracy_vs_cost(a, rep.across_devices)),
                               ("domains", domain_heatmap(a)), ("ranks", rank_diagram(a))):
                if data is not None:
                    out[safe_filename(f"{a.selection}_{a.protocol}_{kind}") + ".png"] = data
    return out


def write(rep: "Report", directory: str | os.PathLike) -> list[Path]:
    """Write :func:`figures` into ``directory`` (created); return the paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in figures(rep).items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths
