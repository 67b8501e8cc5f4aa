"""The shipped task suites: ``standard`` plans every embedded cross-domain task; ``domainbed``
validates and names its missing data clearly."""

from __future__ import annotations

import pytest

from xbench.errors import ConfigError
from xbench.harness.plan import build_plan
from xbench.harness.suite import list_suites, load_suite
from xbench.registry import METHODS, TASKS, load_task


def test_standard_plans_every_embedded_cross_domain_task_with_one_method_per_dg_family():
    """Issue 13's design: every embedded cross-domain task under DG, >= 5 seeds (10 on rotated
    digits, 15 on shapes), two or more held-out targets where a task has the domains, one DG method per
    family, TTA methods only under their own protocol, and every UDA method."""
    suite = load_suite("standard")
    assert suite.seeds == [0, 1, 2, 3, 4] and suite.methods == ["*"]
    embedded = {n for n in TASKS.names() if "embedded" in TASKS.entry(n).tags
                and load_task(n).kind == "cross_domain"}
    dg = [t for t in suite.tasks if t.protocol in (None, "dg")]
    assert {t.name for t in dg} == embedded
    for entry in dg:
        assert len(entry.seeds or suite.seeds) >= 5
        domains = load_task(entry.name, **entry.options).domains
        if len(domains) > 2:
            assert entry.all_targets or len(entry.targets) >= 2, entry.name
    plan = build_plan(suite, methods=["erm"])
    counts = {p: sum(j.protocol == p for j in plan.jobs) for p in ("dg", "tta", "uda")}
    # dg: rotated 2 targets x 10 seeds, colored 3 x 5, syn2real 1 x 5, shapes 4 x 15,
    # corrupted and MNIST-1D 2 x 5; tta: rotated and MNIST-1D, 2 x 5 each; uda: synthetic ->
    # real, 5
    assert counts == {"dg": 20 + 15 + 5 + 60 + 2 * 10, "tta": 20, "uda": 5}
    full = build_plan(suite)
    assert {job.protocol for job in full.jobs} == {"dg", "tta", "uda", "fewshot", "paired"}
    assert {j.method for j in full.jobs if j.protocol == "dg"} == {
        "erm", "coral", "dann", "irm", "groupdro", "mixup"}
    assert {j.method for j in full.jobs if j.protocol == "tta"} == {"erm", "adabn", "tent"}
    uda = {n for n in METHODS.names() if METHODS.get(n).__module__.startswith("xbench.")
           and "uda" in getattr(METHODS.get(n), "protocols", ())}
    cannot = {m for m, task, why in full.not_applicable if "source domains" in why}
    assert uda - cannot <= {j.method for j in full.jobs if j.protocol == "uda"}
    assert "kd_multi_source" in cannot  # one source domain in synthetic -> real


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
