"""Plan and suite files: job identity, filters, overrides, validation."""

from __future__ import annotations

import pytest

from xbench.errors import ConfigError, UnknownNameError
from xbench.harness.plan import build_plan, config_hash
from xbench.harness.suite import list_suites, load_suite


def test_job_id_is_a_hash_of_the_canonical_config_without_suite_name(tiny_suite):
    jobs = build_plan(load_suite(str(tiny_suite))).jobs
    assert len(jobs) == 2 and len({j.job_id for j in jobs}) == 2
    job = jobs[0]
    assert job.job_id == config_hash(job.config())
    assert "suite" not in job.config()
    import dataclasses

    assert dataclasses.replace(job, suite="other").job_id == job.job_id
    assert config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})


def test_hparams_are_resolved_with_defaults_and_overrides(tiny_suite):
    plan = build_plan(load_suite(str(tiny_suite)), overrides={"erm": {"lr": 0.5}})
    assert plan.jobs[0].hparams == {"lr": 0.5, "weight_decay": 0.0}
    default = build_plan(load_suite(str(tiny_suite))).jobs[0]
    assert default.hparams == {"lr": 1e-3, "weight_decay": 0.0}
    assert default.job_id != plan.jobs[0].job_id


def test_filters_and_seed_override(tiny_suite):
    plan = build_plan(load_suite(str(tiny_suite)), seeds=[7], methods=["erm"])
    assert [(j.method, j.seed) for j in plan.jobs] == [("erm", 7)]
    with pytest.raises(UnknownNameError, match="Did you mean: erm"):
        build_plan(load_suite(str(tiny_suite)), methods=["ermm"])
    with pytest.raises(UnknownNameError, match="no task of suite 'tiny'"):
        build_plan(load_suite(str(tiny_suite)), tasks=["nothing*"])


def test_unknown_override_key_names_method_and_valid_keys(tiny_suite):
    with pytest.raises(ConfigError, match="'erm' has no hyper-parameter.*'lrr'.*lr, weight_decay"):
        build_plan(load_suite(str(tiny_suite)), overrides={"erm": {"lrr": 1}})


@pytest.mark.parametrize("text, message", [
    ("seeds = [0]\n[[tasks]]\nname='tiny_blobs'\nsteps='many'\n", "must be a positive integer"),
    ("seed = [0]\n[[tasks]]\nname='tiny_blobs'\n", "unknown key 'seed' in top level"),
    ("seeds = [0]\n", "no \\[\\[tasks\\]\\] entries"),
    ("seeds = [0]\n[[tasks]]\nname='tiny_blobs'\ntarget='zz'\n", "has no domain 'zz'"),
    ("seeds = [0]\n[[tasks]]\nname='tiny_blobs'\nflavour=1\n", "unknown key 'flavour'"),
    ("seeds = [0\n", "not valid TOML"),
    ("seeds = [0]\n[[tasks]]\nname='tiny_blobs'\noptions={colour=1}\n", "no option"),
])
def test_malformed_suites_are_config_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        build_plan(load_suite(str(path)))
    assert "\n" not in str(info.value)


def test_targets_all_runs_each_domain_in_turn(tmp_path):
    path = tmp_path / "all.toml"
    path.write_text("seeds=[0]\nmethods=['erm']\n[[tasks]]\nname='tiny_blobs'\ntargets='all'\n")
    plan = build_plan(load_suite(str(path)))
    assert [j.target for j in plan.jobs] == [("a",), ("b",), ("c",)]


def test_every_shipped_suite_loads():
    assert "quick" in list_suites()
    for name in list_suites():
        suite = load_suite(name)
        assert suite.tasks and suite.seeds


def test_hparam_samples_share_draws_across_methods_and_keep_overrides(tiny_suite):
    from xbench.hparams import LogUniform, sample_hparams

    plan = build_plan(load_suite(str(tiny_suite)), hparam_samples=3, seeds=[0],
                      overrides={"erm": {"weight_decay": 0.5}})
    trials = {j.trial: j.hparams for j in plan.jobs}
    assert sorted(trials) == [0, 1, 2, 3]
    assert trials[0] == {"lr": 1e-3, "weight_decay": 0.5}  # trial 0: defaults (+ overrides)
    assert all(t["weight_decay"] == 0.5 for t in trials.values())  # --set wins over draws
    assert len({t["lr"] for t in trials.values()}) == 4
    # draws are keyed by hyper-parameter name: any method with "lr" gets the same value
    same = sample_hparams({"lr": LogUniform(1e-4, 1e-2)}, trial=2)
    assert same["lr"] == sample_hparams({"lr": LogUniform(1e-4, 1e-2), "other": LogUniform(1, 2)},
                                        trial=2)["lr"] == trials[2]["lr"]
    assert 1e-4 <= trials[2]["lr"] <= 1e-2


def test_leave_one_domain_out_adds_one_auxiliary_job_per_source_domain(tiny_suite):
    plan = build_plan(load_suite(str(tiny_suite)), seeds=[0], leave_one_domain_out=True)
    assert sorted(j.holdout for j in plan.jobs) == [(), ("a",), ("b",)]
    assert len({j.job_id for j in plan.jobs}) == 3


def test_holdout_job_trains_without_the_held_out_domain():
    from tests.conftest import make_job
    from xbench.harness.runner import run_job
    import dataclasses

    record = run_job(dataclasses.replace(make_job(), holdout=("a",)))
    assert record["status"] == "ok" and record["holdout"] == ["a"]
    assert "a" in record["metrics"]["domains"]  # evaluated, for leave-one-domain-out selection


def test_holdout_domain_never_reaches_the_training_sampler():
    from xbench.harness.sampling import training_sampler
    from xbench.methods.erm import ERM
    from xbench.registry import load_task
    from xbench.tasks.base import Budget

    task = load_task("tiny_blobs")
    info = task.info(("c",), "dg", Budget(batch_size=4), holdout=("a",))
    assert info.source_domains == ("b",)
    data = task.build()
    batch = training_sampler(ERM, info, data, seed=0).sample(0)
    rows_b = {tuple(r.tolist()) for r in data["b"]["train"].x}
    assert len(batch.source) == 1 and all(tuple(r.tolist()) in rows_b for r in batch.source[0][0])


def test_a_task_entry_can_narrow_the_methods(tmp_path):
    path = tmp_path / "narrow.toml"
    path.write_text("seeds=[0]\nmethods=['erm', 'test_*']\n"
                    "[[tasks]]\nname='tiny_blobs'\nmethods=['erm']\n"
                    "[[tasks]]\nname='tiny_blobs'\ntarget='b'\n")
    plan = build_plan(load_suite(str(path)))
    by_target = sorted((j.target, j.method) for j in plan.jobs)
    assert by_target == [(("b",), "erm"), (("b",), "test_exploding"), (("b",), "test_raising"),
                         (("c",), "erm")]


def test_a_task_entry_can_set_its_own_seeds(tmp_path):
    """A noisier task can take more seeds; --seeds still replaces every task's."""
    text = ("seeds=[0, 1]\nmethods=['erm']\n[[tasks]]\nname='tiny_blobs'\nseeds=[0, 1, 2, 3]\n"
            "[[tasks]]\nname='tiny_blobs'\ntarget='b'\n")
    seeds = sorted((j.target, j.seed) for j in _plan(tmp_path, text).jobs)
    assert seeds == [(("b",), 0), (("b",), 1), (("c",), 0), (("c",), 1), (("c",), 2), (("c",), 3)]
    assert sorted(j.seed for j in _plan(tmp_path, text, seeds=[7]).jobs) == [7, 7]
    with pytest.raises(ConfigError, match=r"\[\[tasks\]\] #1 seeds' must be a non-empty list"):
        _plan(tmp_path, "methods=['erm']\n[[tasks]]\nname='tiny_blobs'\nseeds=[]\n")


def _plan(tmp_path, text, **kwargs):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return build_plan(load_suite(str(path)), **kwargs)


def test_the_data_split_follows_the_seed_unless_the_suite_pins_it(tmp_path):
    plan = _plan(tmp_path, "seeds=[0, 1]\nmethods=['erm']\n[[tasks]]\nname='tiny_blobs'\n")
    assert [(j.seed, j.task_options["data_seed"]) for j in plan.jobs] == [(0, 0), (1, 1)]
    pinned = _plan(tmp_path, "seeds=[0, 1]\nmethods=['erm']\n[[tasks]]\nname='tiny_blobs'\n"
                             "options={data_seed=5}\n")
    assert [j.task_options["data_seed"] for j in pinned.jobs] == [5, 5]
    # the same experiment keeps its id; a pinned split is another experiment
    assert plan.jobs[1].job_id == _plan(tmp_path, "seeds=[1]\nmethods=['erm']\n[[tasks]]\n"
                                                  "name='tiny_blobs'\n").jobs[0].job_id
    assert pinned.jobs[1].job_id != plan.jobs[1].job_id


def test_tta_is_posed_by_every_dg_task_with_a_declared_stream(tmp_path):
    text = ("seeds=[0]\nmethods=['erm', 'tent', 'adabn', 'coral']\n[tta]\nbatch_size=32\n"
            "[[tasks]]\nname='tiny_blobs'\nprotocol='tta'\n"
            "[[tasks]]\nname='tiny_blobs'\nprotocol='tta'\ntta={mode='continual'}\n"
            "[[tasks]]\nname='tiny_blobs'\n")
    plan = _plan(tmp_path, text)
    tta = [(j.method, j.stream["batch_size"], j.stream["mode"]) for j in plan.jobs
           if j.protocol == "tta"]
    assert sorted(tta) == sorted([(m, 32, mode) for m in ("erm", "tent", "adabn")
                                  for mode in ("reset", "continual")])
    dg = [j for j in plan.jobs if j.protocol == "dg"]
    assert {j.method for j in dg} == {"erm", "coral"} and all(j.stream is None for j in dg)
    assert ("coral", "tiny_blobs [tta]", "does not support protocol 'tta'") in \
        plan.not_applicable
    assert ("tent", "tiny_blobs [dg]", "does not support protocol 'tta'".replace("tta", "dg")) \
        in plan.not_applicable
    # the stream is part of the job's identity
    ids = {(j.method, j.stream["mode"]): j.job_id for j in plan.jobs if j.protocol == "tta"}
    assert ids["erm", "reset"] != ids["erm", "continual"]


@pytest.mark.parametrize("text, message", [
    ("[tta]\nmode='sometimes'\n", "mode must be one of reset, continual"),
    ("[tta]\nbatch_size=0\n", "batch_size must be a positive integer"),
    ("[[tasks]]\nname='tiny_blobs'\ntta={batch_size=8}\n", "needs protocol = \"tta\""),
    ("[budget]\nstage_steps={techer=3}\n", "no registered method has a stage 'techer'"),
    ("[budget]\nstage_steps={teacher=-3}\n", "stage_steps.teacher must be a positive integer"),
    ("[hparams.\"*\"]\nlrr=1\n", "which no registered method takes"),
])
def test_new_suite_keys_are_validated(tmp_path, text, message):
    text = "seeds=[0]\nmethods=['erm']\n" + text
    if "[[tasks]]" not in text:
        text += "[[tasks]]\nname='tiny_blobs'\n"
    with pytest.raises(ConfigError, match=message):
        _plan(tmp_path, text)


def test_stage_budgets_default_to_the_full_steps_and_a_suite_can_set_them(tmp_path):
    base = "seeds=[0]\nmethods=['kd_logit', 'erm']\n[budget]\nsteps=12\n"
    tasks = "[[tasks]]\nname='tiny_blobs'\n"
    default = {j.method: j.budget["stage_steps"] for j in _plan(tmp_path, base + tasks).jobs}
    assert default == {"kd_logit": {"teacher": 12, "student": 12}, "erm": {"train": 12}}
    plan = _plan(tmp_path, base.replace("steps=12", "steps=12\nstage_steps={teacher=30}")
                 + tasks)
    assert {j.method: j.budget["stage_steps"] for j in plan.jobs} == {
        "kd_logit": {"teacher": 30, "student": 12}, "erm": {"train": 12}}


def test_a_suite_wide_hparam_reaches_every_method_that_takes_it(tmp_path):
    text = ("seeds=[0]\nmethods=['erm', 'coral', 'mldg']\n[hparams.\"*\"]\nlr=5e-5\n"
            "penalty_weight=3.0\n[hparams.coral]\nlr=1e-4\n[[tasks]]\nname='tiny_blobs'\n")
    got = {j.method: j.hparams for j in _plan(tmp_path, text).jobs}
    assert got["erm"]["lr"] == 5e-5 and got["mldg"]["lr"] == 5e-5
    assert got["coral"]["lr"] == 1e-4 and got["coral"]["penalty_weight"] == 3.0
    assert "penalty_weight" not in got["erm"]


def test_methods_needing_two_sources_are_skipped_once_per_task_under_that_protocol(tmp_path):
    # tiny_blobs with target "b+c" leaves one source domain
    text = ("seeds=[0, 1]\nmethods=['erm', 'coral', 'dann', 'mldg']\nhparam_samples=2\n"
            "[[tasks]]\nname='tiny_blobs'\ntargets=[['b', 'c']]\n"
            "[[tasks]]\nname='tiny_blobs'\ntargets=[['b', 'c']]\nprotocol='uda'\n")
    plan = _plan(tmp_path, text)
    ran = {(j.method, j.protocol) for j in plan.jobs}
    assert ran == {("erm", "dg"), ("erm", "uda"), ("dann", "uda")}  # dann: 1 source is enough
    one_source = [(m, reason) for m, task, reason in plan.not_applicable
                  if task == "tiny_blobs->b+c [dg]"]
    assert one_source == [(m, "needs 2 source domains under dg, has 1")
                          for m in ("coral", "dann", "mldg")]  # once each, whatever the trials


def test_few_shot_steps_see_one_episode_of_labelled_images(tmp_path):
    text = ("seeds=[0]\nmethods=['finetune', 'protonet']\n[budget]\nbatch_size=16\n"
            "[[tasks]]\nname='tiny_fewshot'\nprotocol='fewshot'\nways=2\nshots=1\nqueries=3\n")
    plan = _plan(tmp_path, text)
    assert {j.budget["batch_size"] for j in plan.jobs} == {2 * (1 + 3)}
    with pytest.raises(ConfigError, match="sets batch_size under protocol 'fewshot'"):
        _plan(tmp_path, text + "batch_size=16\n")


def test_an_old_task_version_is_chosen_by_option_and_rebuilt_by_the_runner(tmp_path):
    from xbench.harness.runner import task_data

    suite = tmp_path / "v.toml"
    suite.write_text('name = "v"\nseeds = [0]\nmethods = ["erm"]\n[budget]\nsteps = 2\n'
                     '[[tasks]]\nname = "mnist1d_shift"\noptions = { version = "1", '
                     'domains = ["clean", "sheared"] }\n'
                     '[[tasks]]\nname = "mnist1d_shift"\noptions = { domains = ["clean", '
                     '"sheared"] }\n')
    old, new = build_plan(load_suite(str(suite))).jobs
    assert (old.task_version, new.task_version) == ("1", "2")
    assert "version" not in old.task_options and old.job_id != new.job_id
    task, data = task_data(old, "cpu")
    assert task.version == "1" and len(data["sheared"]["test"].y) == 200
    bad = tmp_path / "bad.toml"
    bad.write_text(suite.read_text().replace('version = "1"', 'version = "0"'))
    with pytest.raises(ConfigError, match="has no version '0'; it has: 2, 1"):
        build_plan(load_suite(str(bad)))


def test_a_data_fingerprint_is_part_of_the_id_only_where_a_task_has_one(tiny_suite):
    import dataclasses

    job = build_plan(load_suite(str(tiny_suite))).jobs[0]
    assert job.data_fingerprint is None and "data_fingerprint" not in job.config()
    other = dataclasses.replace(job, data_fingerprint="0123456789abcdef")
    assert other.config()["data_fingerprint"] == "0123456789abcdef"
    assert other.job_id != job.job_id
    assert dataclasses.replace(job, data_fingerprint="fedcba9876543210").job_id != other.job_id
