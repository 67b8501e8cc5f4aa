"""The shipped task suites: ``standard`` plans every embedded cross-domain task; ``domainbed``
validates and names its missing data clearly."""

from __future__ import annotations

import pytest

from xbench.errors import ConfigError
from xbench.harness.plan import build_plan
from xbench.harness.suite import list_suites, load_suite
from xbench.registry import METHODS, TASKS, load_task


def test_standard_plans_every_embedded_cross_domain_task_and_every_method():
    suite = load_suite("standard")
    assert suite.seeds == [0, 1, 2] and suite.methods == ["*"]
    embedded = {n for n in TASKS.names() if "embedded" in TASKS.entry(n).tags
                and load_task(n).kind == "cross_domain"}
    dg_tasks = {t.name for t in suite.tasks if t.protocol in (None, "dg")}
    assert dg_tasks == embedded
    tta_tasks = {t.name for t in suite.tasks if t.protocol == "tta"}
    assert tta_tasks == embedded  # tent and adabn run under their own protocol, with erm
    plan = build_plan(suite, methods=["erm"])
    assert len(plan.jobs) == 3 * (2 * len(embedded) + 1)  # dg, tta + UDA on synthetic -> real
    for job in plan.jobs:
        assert job.target == load_task(job.task).default_target
    full = build_plan(suite)
    builtin = {n for n in METHODS.names() if METHODS.get(n).__module__.startswith("xbench.")}
    assert builtin <= {job.method for job in full.jobs}  # every built-in method, somewhere
    assert {job.protocol for job in full.jobs} == {"dg", "tta", "uda", "fewshot", "paired"}
    tta = {job.method for job in full.jobs if job.protocol == "tta"}
    assert tta & builtin == {"erm", "adabn", "tent"}
    assert not {"adabn", "tent"} & {job.method for job in full.jobs if job.protocol == "dg"}


def test_domainbed_suite_loads_and_names_the_five_datasets():
    assert {"quick", "standard", "domainbed"} <= set(list_suites())
    suite = load_suite("domainbed")
    assert [t.name for t in suite.tasks] == ["pacs", "vlcs", "officehome", "terraincognita",
                                             "domainnet"]
    for entry in suite.tasks:
        assert entry.all_targets
        assert entry.options["arch"] == "resnet50" and entry.options["resolution"] == 224
        offline = {k: v for k, v in entry.options.items() if k not in ("root", "weights")}
        task = load_task(entry.name, **offline)  # every option is one the task takes
        assert task.input_shape == (3, 224, 224)
    domainnet = suite.tasks[-1]
    assert domainnet.budget == {"steps": 15000, "eval_every": 1000}
    # DomainBed trains every algorithm at lr 5e-5, not only ERM
    assert suite.hparams == {"*": {"lr": 5e-5}}
    from xbench.harness.plan import _merge_hparams

    merged = _merge_hparams(suite.hparams, {}, ["erm", "coral", "irm", "dann", "mldg"], "x")
    assert all(values["lr"] == 5e-5 for values in merged.values()) and len(merged) == 5


def test_domainbed_without_data_is_one_line_naming_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"data folder 'data/PACS' does not exist") as err:
        build_plan(load_suite("domainbed"), methods=["erm"])
    assert "\n" not in str(err.value)
