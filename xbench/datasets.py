"""``xbench data``: what a dataset on disk is, where it is published, and whether it is all there.

``check(name, root)`` walks ``root`` the way the task will read it and counts
images per domain and class, listing every missing domain, class folder or
file, and decodes every image (with Pillow's decompression-bomb limit),
naming each one that is empty, truncated, not an image or a dangling link
(hidden ``._*`` files are named too: the loader skips them); ``describe(name)`` tells where the dataset is published and the layout
xbench expects. Neither downloads anything.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

from xbench.errors import UnknownNameError
from xbench.tasks.catalog import DATASETS, DIGITS, DatasetInfo
from xbench.tasks.folder import (IMAGE_EXTENSIONS, class_images, domain_dir, hidden_images,
                                 open_image, subfolders)

NAMES = ("folder", *DATASETS)

#: Files torchvision's readers need for each domain of ``digits_mnist_usps_svhn``.
DIGIT_FILES = {
    "mnist": ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte",
              "MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"),
    "usps": ("usps.bz2", "usps.t.bz2"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
}


@dataclasses.dataclass
class CheckReport:
    """What ``check`` found: image counts per domain and class, and what is missing."""

    name: str
    root: Path
    counts: dict[str, dict[str, int]]  # domain -> class (or file) -> images (or bytes)
    missing: list[str]
    unexpected: list[str]
    unreadable: list[str] = dataclasses.field(default_factory=list)  # "path: why"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable


def lookup(name: str) -> DatasetInfo | None:
    """The catalogue entry for ``name`` (``None`` for the generic ``folder``)."""
    if name == "folder":
        return None
    if name not in DATASETS:
        close = difflib.get_close_matches(name, NAMES, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"Unknown dataset '{name}'.{hint} Known: {', '.join(NAMES)}")
    return DATASETS[name]


def check(name: str, root: str | Path) -> CheckReport:
    """Verify the layout of dataset ``name`` under ``root``; never raises for missing data."""
    info = lookup(name)
    root = Path(root).expanduser()
    report = CheckReport(name=name, root=root, counts={}, missing=[], unexpected=[])
    if not root.is_dir():
        report.missing.append(f"data folder {root} (does not exist)")
        return report
    if info is DIGITS:
        for domain, files in DIGIT_FILES.items():
            report.counts[domain] = {}
            for rel in files:
                path = root / rel
                if path.is_file():
                    report.counts[domain][rel] = path.stat().st_size
                else:
                    report.missing.append(f"{domain}: file {path}")
        return report
    domains = info.domains if info else tuple(subfolders(root))
    if not domains:
        report.missing.append(f"domain folders under {root} (expected {root}/<domain>/<class>/"
                              f"<image>)")
    if info:
        report.unexpected += [f"folder {root / d} (not a {info.name} domain)"
                              for d in subfolders(root) if d not in info.domains]
    inner = info.inner if info else ""
    if info:
        expected = info.classes
    else:  # a generic folder: every domain should hold the union of the classes
        expected = tuple(sorted({c for d in domains for c in subfolders(domain_dir(root, d))}))
    for domain in domains:
        base = domain_dir(root, domain, inner)
        if not base.is_dir():
            report.missing.append(f"domain '{domain}': folder {base}")
            continue
        present = subfolders(base)
        report.counts[domain] = {c: len(class_images(base / c)) for c in expected if c in present}
        report.missing += [f"domain '{domain}': class folder {base / c}"
                           for c in expected if c not in present]
        report.missing += [f"domain '{domain}': images in {base / c} (folder is empty)"
                           for c, n in report.counts[domain].items() if n == 0]
        report.unexpected += [f"domain '{domain}': class folder {base / c} (not a {name} class)"
                              for c in present if c not in expected]
        for c in present:
            report.unexpected += [f"hidden file {p} (skipped; a macOS AppleDouble file?)"
                                  for p in hidden_images(base / c)]
        paths = [str(base / c / f) for c in report.counts[domain]
                 for f in class_images(base / c)]
        report.unreadable += _unreadable(paths)
    return report


def _unreadable(paths: list[str]) -> list[str]:
    """``"path: why"`` for every image that cannot be decoded (threads: PIL releases the GIL)."""
    import concurrent.futures
    import os

    def problem(path: str) -> str | None:
        try:
            open_image(path).close()
        except ValueError as exc:
            return f"{path}: {exc}"
        return None

    with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return [p for p in pool.map(problem, paths) if p is not None]


def format_check(report: CheckReport, per_class: bool | None = None) -> str:
    """The report as text: a per-domain summary, per-class counts, then what is missing."""
    from tabulate import tabulate

    lines = [f"{report.name} under {report.root}:"]
    if report.counts:
        digits = report.name == DIGITS.name
        rows = []
        for domain, counts in report.counts.items():
            values = list(counts.values())
            rows.append([domain, len(values), sum(values)] if digits else
                         [domain, len(values), sum(values), min(values, default=0),
                          max(values, default=0)])
        headers = (["domain", "files", "bytes"] if digits else
                   ["domain", "classes", "images", "min/class", "max/class"])
        lines.append(tabulate(rows, headers=headers, tablefmt="simple", intfmt=","))
        classes = sorted({c for counts in report.counts.values() for c in counts})
        if not digits and (per_class or (per_class is None and len(classes) <= 20)):
            table = [[c, *(report.counts[d].get(c, "-") for d in report.counts)] for c in classes]
            lines += ["", tabulate(table, headers=["class", *report.counts], tablefmt="simple")]
    for item in report.unexpected:
        lines.append(f"note: unexpected {item}")
    for item in report.missing:
        lines.append(f"missing: {item}")
    for item in report.unreadable:
        lines.append(f"unreadable: {item}")
    if report.ok:
        lines.append("OK: everything expected is there and every image decodes")
    elif report.missing:
        lines.append(f"MISSING: {len(report.missing)} item(s)"
                     + (f", {len(report.unreadable)} unreadable image(s)" if report.unreadable
                        else "") + f"; see `xbench data info {report.name}`")
    else:
        lines.append(f"UNREADABLE: {len(report.unreadable)} image(s) cannot be decoded; remove "
                     f"or replace them")
    return "\n".join(lines)


def describe(name: str) -> str:
    """What dataset ``name`` is, where it is published and the layout xbench expects."""
    info = lookup(name)
    if info is None:
        return ("folder: any image dataset laid out as ROOT/<domain>/<class>/<image>\n"
                f"  image files: {', '.join(IMAGE_EXTENSIONS)} (any case, nested folders ok)\n"
                "  domains: ROOT's sub-folders; classes: the union of their sub-folders, sorted\n"
                "  suite entry:\n"
                "    [[tasks]]\n    name = \"folder\"\n"
                "    options = { root = \"ROOT\", resolution = 224 }\n    target = \"<domain>\"")
    if info.layout:
        layout = info.layout
    else:
        inner = f"{info.inner}/" if info.inner else ""
        layout = f"ROOT/<domain>/{inner}<class>/<image>"
    shown = ", ".join(info.classes[:10]) + (", ..." if len(info.classes) > 10 else "")
    return "\n".join([
        f"{info.name}: {info.title}",
        f"  paper:   {info.citation}",
        f"  get it:  {info.url}",
        f"  images:  {info.images}",
        f"  domains: {', '.join(info.domains)} (default target: {info.default_target})",
        f"  classes: {len(info.classes)} ({shown})",
        f"  layout:  {layout}",
        f"  usual ROOT: <data dir>/{info.folder}",
        f"  check:   xbench data check {info.name} --root ROOT",
        "  suite entry:",
        f"    [[tasks]]\n    name = \"{info.name}\"\n    options = {{ root = \"ROOT\" }}\n"
        f"    target = \"{info.default_target}\"",
    ])
