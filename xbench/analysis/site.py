"""``xbench publish``: a static, self-contained HTML leaderboard (one ``index.html``).

Inline CSS and JavaScript, plots embedded as base64 PNG, no external
resource. Every table sorts when a header is clicked (numbers by value,
missing cells last); ``index.html#sort=TABLE_ID:COLUMN[:descending]`` opens
the page sorted (the script clicks that header itself; several ``&sort=`` may follow).
Oracle rows stay below the ranked rows in every order. Each leaderboard row
carries its provenance: selection method, chosen runs (job ids = config
hashes), commits and environments. Every string that comes from records is
escaped with ``html.escape``.
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import warnings
from pathlib import Path
from typing import Sequence

from xbench.analysis import sweep
from xbench.analysis.records import display_path
from xbench.analysis.report import (MISSING, Analysis, Cell, Report, Table, build,
                           render_html, runs_table_of)

INDEX = "index.html"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;
max-width:1200px;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd}
.meta,.note{color:#555;font-size:.85rem}.oracle-banner{background:#fff3cd;border:1px solid #e0c36c;
padding:.4rem .7rem}nav a{margin-right:.8rem}
table.xb{border-collapse:collapse;margin:1rem 0 .3rem;font-variant-numeric:tabular-nums}
table.xb caption{caption-side:top;text-align:left;font-size:.85rem;color:#333;padding:.3rem 0}
table.xb th,table.xb td{border:1px solid #d4d4d4;padding:.25rem .55rem;text-align:right}
table.xb td:first-child,table.xb th:first-child{text-align:left}
table.xb th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
table.xb th[aria-sort=ascending]::after{content:" \\25B2"}
table.xb th[aria-sort=descending]::after{content:" \\25BC"}
td.top{font-weight:700;background:#e9f5e9}td.oracle{font-style:italic;color:#8a5a00}
td.missing{color:#999}details{text-align:left}details code{font-size:.8rem}
img.plot{max-width:100%;border:1px solid #eee;margin:.5rem 0}
"""

SCRIPT = """
(function () {
  function key(td) {
    if (!td) return null;
    var v = td.getAttribute('data-v');
    if (v !== null) return parseFloat(v);
    var t = td.textContent.trim();
    return (t === '' || t === '\\u2014' || t === 'n/a') ? null : t.toLowerCase();
  }
  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r, i) {
      return {row: r, key: key(r.cells[col]), i: i,
              pinned: r.cells[0].classList.contains('oracle') ? 1 : 0};
    });
    var sign = dir === 'descending' ? -1 : 1;
    rows.sort(function (a, b) {
      if (a.pinned !== b.pinned) return a.pinned - b.pinned;  // oracle rows stay apart, last
      if (a.key === null && b.key === null) return a.i - b.i;
      if (a.key === null) return 1;            // missing cells always last
      if (b.key === null) return -1;
      if (typeof a.key === 'number' && typeof b.key === 'number') {
        if (a.key !== b.key) return sign * (a.key - b.key);
      } else {
        var c = String(a.key).localeCompare(String(b.key));
        if (c !== 0) return sign * c;
      }
      return a.i - b.i;                        // stable
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === col) th.setAttribute('aria-sort', dir); else th.removeAttribute('aria-sort');
    });
    table.setAttribute('data-sorted', col + ':' + dir);
  }
  function onClick(event) {
    var th = event.currentTarget, table = th.closest('table');
    var dir = th.getAttribute('aria-sort') === 'descending' ? 'ascending' : 'descending';
    if (th.getAttribute('aria-sort') === null && key(table.tBodies[0].rows[0] &&
        table.tBodies[0].rows[0].cells[+th.getAttribute('data-col')]) !== null &&
        typeof key(table.tBodies[0].rows[0].cells[+th.getAttribute('data-col')]) === 'string') {
      dir = 'ascending';                       // text columns start A-Z, numbers best-first
    }
    sortTable(table, +th.getAttribute('data-col'), dir);
  }
  function init() {
    Array.prototype.forEach.call(document.querySelectorAll('table.xb thead th'), function (th) {
      th.addEventListener('click', onClick);
    });
    var re = /[#&]sort=([^:&]+):(\\d+)(?::(ascending|descending))?/g, m;
    while ((m = re.exec(location.hash)) !== null) {
      var table = document.getElementById(decodeURIComponent(m[1]));
      var th = table && table.tHead && table.tHead.rows[0].cells[+m[2]];
      if (th) {
        th.click();
        if (m[3] && th.getAttribute('aria-sort') !== m[3]) th.click();
      }
    }
    document.body.setAttribute('data-ready', '1');
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
"""


def _provenance(a: Analysis, method: str) -> str:
    """An escaped ``<details>`` block: selection, chosen runs, commits, environments."""
    esc = html.escape
    runs = a.runs[a.runs["method"] == method]
    if runs.empty:
        return esc(MISSING)
    commits = sorted({(str(s)[:10] + ("+dirty" if d else "")) if s else "unknown"
                      for s, d in zip(runs["git_sha"], runs["git_dirty"])})
    envs = sorted({f"{o}; xbench {x}; torch {t}; python {p}; {dev}" for o, x, t, p, dev in
                   zip(runs["method_origin"], runs["xbench"], runs["torch"], runs["python"],
                       runs["device_name"])})
    items = "".join(
        f"<li><code>{esc(str(r.job_id))}</code> {esc(str(r.task))} seed {esc(str(r.seed))}, "
        f"trial {esc(str(r.trial))}/{esc(str(r.trials))}, step {esc(str(r.step))}</li>"
        for r in runs.sort_values(["task", "seed"]).itertuples())
    return (f"<details><summary>{len(runs)} runs</summary>"
            f"<div>selection: <b>{esc(a.selection)}</b></div>"
            f"<div>commits: {esc(', '.join(commits))}</div>"
            f"<div>environment: {esc(' | '.join(envs))}</div>"
            f"<div>runs (job id = config hash):</div><ul>{items}</ul></details>")


def _with_provenance(table: Table, a: Analysis) -> Table:
    rows = [row + [Cell(f"{int((a.runs['method'] == row[0].value).sum())} runs",
                        html=_provenance(a, str(row[0].value)))] for row in table.rows]
    return Table(table.key, table.title, [*table.headers, "provenance"], rows, table.data,
                 table.notes)


def _section(rep: Report, a: Analysis, plots: dict[str, bytes], first: bool) -> str:
    esc = html.escape
    sid = f"{a.selection}-{a.protocol}"
    parts = []
    if first:
        parts += [f'<section id="sec-{esc(a.selection)}"><h2>Model selection: '
                  f'{esc(a.selection)}</h2>',
                  f'<p class="meta">{esc(sweep.DESCRIPTIONS[a.selection])}</p>']
        if a.oracle:
            parts.append('<p class="oracle-banner">ORACLE selection: it reads target '
                         'validation labels. Not comparable with the other selections.</p>')
    parts.append(f'<h3 id="sec-{esc(sid)}">Protocol: {esc(a.protocol)}</h3>')
    prefix = f"{a.selection}_{a.protocol}"
    for table in rep.tables(a):
        if table.key == "accuracy":
            table = _with_provenance(table, a)
        parts.append(render_html(table, f"{table.key}-{sid}"))
        if table.key == "aggregate":
            parts += _images(plots, [f"{prefix}_ranks.png"])
        if table.key == "pareto":
            parts += _images(plots, [f"{prefix}_accuracy_vs_cost.png"])
        if table.key == "worst":
            parts += _images(plots, [f"{prefix}_domains.png"])
    runs = runs_table_of(a)
    parts.append(f"<details><summary>All {len(runs.rows)} chosen runs (provenance)</summary>"
                 f"{render_html(runs, f'runs-{sid}')}</details>")
    return "\n".join(parts)


def _images(plots: dict[str, bytes], names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        data = plots.get(name)
        if data is not None:
            encoded = base64.b64encode(data).decode("ascii")
            out.append(f'<img class="plot" alt="{html.escape(name)}" '
                       f'src="data:image/png;base64,{encoded}">')
    return out


def page(rep: Report, title: str = "xbench leaderboard", embed_plots: bool = True,
         command: str | None = None, sources: Sequence[str] = ()) -> str:
    """The whole self-contained page for a report."""
    esc = html.escape
    plots: dict[str, bytes] = {}
    if embed_plots:
        from xbench.analysis import plots as plotting

        plots = plotting.figures(rep)
    nav = " ".join(f'<a href="#sec-{esc(a.selection)}">{esc(a.selection)}'
                   f'{" (ORACLE)" if a.oracle else ""}</a>'
                   for a in {a.selection: a for a in rep.analyses}.values())
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta = [f"generated {esc(stamp)}"]
    if command:
        meta.append(f"by <code>{esc(command)}</code>")
    if sources:
        meta.append("from " + ", ".join(f"<code>{esc(str(s))}</code>" for s in sources))
    if rep.invalid:
        meta.append(f"({len(rep.failures)} failed jobs; {rep.invalid} "
                    f"record{'s' if rep.invalid != 1 else ''} skipped as invalid)")
    body = [f"<h1>{esc(title)}</h1>", f'<p class="meta">{" ".join(meta)}</p>',
            f"<nav>Selection methods: {nav} <a href=\"#sec-cost\">cost</a></nav>"]
    for i, a in enumerate(rep.analyses):
        first = i == 0 or rep.analyses[i - 1].selection != a.selection
        if first and i > 0:
            body.append("</section>")
        body.append(_section(rep, a, plots, first))
    if rep.analyses:
        body.append("</section>")
    body.append('<section id="sec-cost"><h2>Cost</h2>' + render_html(rep.cost, "cost")
                + "</section>")
    notes = [f"Not shown: selection {s}" for s in rep.skipped]
    if notes or rep.warnings or rep.failures:
        body.append("<section id=\"sec-notes\"><h2>Notes</h2>")
        body += [f'<p class="note">{esc(n)}</p>' for n in notes]
        if rep.warnings:
            body.append("<h3>Notes (missing cells, tasks left out of averages, tests not run)</h3><ul>"
                        + "".join(f"<li>{esc(w)}</li>" for w in rep.warnings) + "</ul>")
        if rep.failures:
            body.append("<h3>Failed jobs</h3><ul>"
                        + "".join(f"<li>{esc(f)}</li>" for f in rep.failures) + "</ul>")
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def publish(*paths: str | os.PathLike, site: str | os.PathLike, selection: str = "all",
            cost_across_devices: bool = False, title: str = "xbench leaderboard",
            command: str | None = None, control: str | None = None) -> Path:
    """Build ``site/index.html`` from results folders or record files; return its path."""
    rep = build(*paths, selection=selection, cost_across_devices=cost_across_devices,
                control=control)
    for problem in rep.problems:  # broken lines and invalid records, one warning each
        warnings.warn(problem, stacklevel=2)
    text = page(rep, title=title, command=command, sources=[display_path(p) for p in paths])
    folder = Path(site)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INDEX
    tmp = folder / (INDEX + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
