"""``xbench publish``: a self-contained, escaped, sortable HTML leaderboard, opened in Chromium."""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from tests.records_factory import board_records, write
from xbench.cli import main
from xbench.analysis.site import publish

EVIL = "B<script>alert(1)</script>"
EVIL_TASK = 't1"><img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    records = write(root / "records", board_records(names={"B": EVIL}))
    return publish(records, site=root / "site", selection="all",
                   command="xbench publish records --site site")


def test_every_string_from_records_is_escaped(tmp_path):
    records = board_records(names={"B": EVIL})
    for r in records:
        if r["task"] == "t1":
            r["task"] = EVIL_TASK
        r["env"]["device_name"] = "cpu: <b>bold</b>"
    page = publish(write(tmp_path / "r", records), site=tmp_path / "s").read_text()
    assert page.count("<script>") == 1                     # the page's own script only
    assert "alert(1)" in page and "<script>alert(1)" not in page
    assert "B&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "t1&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<b>bold</b>" not in page and "cpu: &lt;b&gt;bold&lt;/b&gt;" in page


def test_the_page_is_self_contained_with_plots_and_provenance(site):
    page = site.read_text()
    assert site.name == "index.html"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert "<style>" in page and "<script>" in page
    assert page.count('src="data:image/png;base64,') >= 6  # 3 plots x 2+ selections
    # provenance of each leaderboard row: selection, job ids (config hashes), commit, env
    assert "selection: <b>training_domain</b>" in page
    assert "<code>A-t1-0-cpu:</code> t1 seed 0, trial 0/1, step 100" in page
    assert "commits: 0123456789" in page
    assert "xbench==0.1.0; xbench 0.1.0; torch 2.0; python 3.11; cpu: Test CPU" in page
    assert "ORACLE selection: it reads target validation labels" in page
    assert "by <code>xbench publish records --site site</code>" in page


def test_cli_publish_and_its_user_errors(capsys, tmp_path):
    records = write(tmp_path / "r", board_records())
    code = main(["publish", str(records), "--site", str(tmp_path / "site"), "--selection",
                 "training_domain"])
    _, err = capsys.readouterr()
    assert code == 0 and (tmp_path / "site" / "index.html").exists()
    assert "leaderboard written to" in err
    code = main(["publish", str(tmp_path / "none"), "--site", str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert code == 2 and "xbench: error:" in err and "no such results folder" in err
    assert "Traceback" not in err


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class Rows(html.parser.HTMLParser):
    """First-cell text of each body row of every table, and the tables' attributes."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[str]] = {}
        self.attrs: dict[str, dict[str, str]] = {}
        self.body_attrs: dict[str, str] = {}
        self._table = None
        self._in_body = False
        self._cell = -1
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body_attrs = attrs
        if tag == "table" and "xb" in (attrs.get("class") or ""):
            self._table = attrs["id"]
            self.tables[self._table] = []
            self.attrs[self._table] = attrs
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._cell = -1
        elif tag == "td" and self._in_body:
            self._cell += 1
            self._text = []

    def handle_endtag(self, tag):
        if tag == "td" and self._in_body and self._cell == 0:
            self.tables[self._table].append("".join(self._text).strip())
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._in_body and self._cell == 0:
            self._text.append(data)


@pytest.mark.skipif(chromium() is None,
                    reason="no chromium binary on this machine (Debian: apt-get install -y "
                           "chromium); the page cannot be opened in a browser here")
def test_the_page_renders_and_sorts_in_headless_chromium(site):
    # the page's own click handlers run: the hash asks the script to click three headers
    url = (site.resolve().as_uri() + "#sort=accuracy-training_domain-dg:2:ascending"
           "&sort=accuracy-last-dg:2:descending&sort=cost:2")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
             "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Rows()
    dom.feed(proc.stdout)
    assert dom.body_attrs.get("data-ready") == "1", "the page's script did not finish"
    oracle = "erm_oracle [ORACLE]"
    # as written by xbench (mean accuracy order), before any click
    assert dom.tables["accuracy-oracle-dg"] == ["A", EVIL, "C", "D", oracle]
    # t2 ascending (two clicks): C 50, A 64, B 72, then D's missing cell; the oracle row
    # (95) stays apart, last
    assert dom.tables["accuracy-training_domain-dg"] == ["C", "A", EVIL, "D", oracle]
    assert dom.attrs["accuracy-training_domain-dg"]["data-sorted"] == "2:ascending"
    # t2 under `last` descending: B 72, A 64, C 50, then D's missing cell, then the oracle
    assert dom.tables["accuracy-last-dg"] == [EVIL, "A", "C", "D", oracle]
    # cost, train samples/s, one click: numbers start best-first (B 300, C 200, A 100, D 50)
    assert dom.tables["cost"] == [EVIL, "C", "A", "D", oracle]
    assert dom.attrs["cost"]["data-sorted"] == "2:descending"
