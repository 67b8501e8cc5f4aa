"""Protocols beyond DG: staged training with frozen modules, references, few-shot, pairs."""

from __future__ import annotations

import dataclasses

import pytest

import torch
import torch.nn.functional as F
from torch import nn

from xbench.harness.episodes import draw_episode, episodes_hash, fixed_episodes
from xbench.harness.plan import Job
from xbench.harness.runner import run_job
from xbench.harness.sampling import training_sampler
from xbench.methods.base import Method
from xbench.registry import METHODS, load_task
from xbench.tasks.base import Budget, EpisodeSpec


class TwoStage(Method):
    """Trains a teacher, then a student from the frozen teacher (test method)."""

    stages = ("teacher", "student")
    frozen_after = {"teacher": ("teacher",)}

    def __init__(self, *, touch_teacher: bool = False):
        self.touch_teacher = touch_teacher

    def setup(self, info, device):
        self.teacher = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
        self.student = nn.Linear(8, 3)
        self.opt_t = torch.optim.SGD(self.teacher.parameters(), lr=0.1)
        self.opt_s = torch.optim.SGD(self.student.parameters(), lr=0.1)
        self.seen = []

    def update(self, batch):
        self.seen.append((batch.stage, self.teacher.training))
        x, y = batch.pooled()
        if batch.stage == "teacher":
            loss = F.cross_entropy(self.teacher(x), y)
            self.opt_t.zero_grad(), loss.backward(), self.opt_t.step()
        else:
            if self.touch_teacher:
                self.teacher.train()  # misbehaves: BN statistics would drift
            with torch.no_grad():
                soft = self.teacher(x).softmax(1)
            loss = F.cross_entropy(self.student(x), soft)
            self.opt_s.zero_grad(), loss.backward(), self.opt_s.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.student(x)

    def references(self):
        return {"teacher": self.teacher}


class Centroids(Method):
    """Nearest class mean on raw inputs: a parameter-light few-shot learner (test method)."""

    protocols = ("fewshot",)
    needs = frozenset({"episodes"})

    def __init__(self, *, lr: float = 0.1):
        self.lr = lr

    def setup(self, info, device):
        self.scale = nn.Linear(8, 8)
        self.opt = torch.optim.SGD(self.scale.parameters(), lr=self.lr)
        self.episodes_seen = 0

    def update(self, batch):
        ep = batch.episode
        self.episodes_seen += 1
        logits = self.predict_episode(ep.support_x, ep.support_y, ep.query_x)
        loss = F.cross_entropy(logits, ep.query_y)
        self.opt.zero_grad(), loss.backward(), self.opt.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.scale(x)

    def predict_episode(self, support_x, support_y, query_x):
        z_s, z_q = self.scale(support_x), self.scale(query_x)
        ways = int(support_y.max()) + 1
        centers = torch.stack([z_s[support_y == k].mean(0) for k in range(ways)])
        return -torch.cdist(z_q, centers) ** 2


class PairUser(Method):
    """Regresses one view on the other from unlabeled pairs (test method)."""

    protocols = ("paired",)
    needs = frozenset({"pairs"})

    def __init__(self):
        pass

    def setup(self, info, device):
        self.shapes = info.input_shapes
        self.map = nn.Linear(4, 8)
        self.head = nn.Linear(8, info.num_classes)
        self.opt = torch.optim.SGD([*self.map.parameters(), *self.head.parameters()], lr=0.05)
        self.pairs_seen = []

    def update(self, batch):
        wide, narrow = batch.pairs
        self.pairs_seen.append((wide, narrow))
        x, y = batch.pooled()
        loss = F.mse_loss(self.map(narrow), wide) + F.cross_entropy(self.head(x), y)
        self.opt.zero_grad(), loss.backward(), self.opt.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.head(self.map(x) if x.shape[1] == 4 else x)


def setup_module():
    METHODS.register("test_two_stage", TwoStage, origin="tests")
    METHODS.register("test_centroids", Centroids, origin="tests")
    METHODS.register("test_pair_user", PairUser, origin="tests")


def teardown_module():
    for name in ("test_two_stage", "test_centroids", "test_pair_user"):
        METHODS.unregister(name)


def _job(task, method, protocol, target, hparams=None, episodes=None, steps=10, batch=16):
    return Job(suite="test", task=task, task_version="1", task_options={"data_seed": 0},
               target=target, protocol=protocol, method=method, hparams=hparams or {}, seed=0,
               budget={"steps": steps, "batch_size": batch, "eval_every": 5,
                       "eval_batch_size": 64}, episodes=episodes)


def _blobs_job(method, hparams=None):
    job = _job("tiny_blobs", method, "dg", ("c",), hparams)
    return dataclasses.replace(job, task_options={"data_seed": 0, "n_per_domain": 60})


def test_stages_are_timed_apart_and_the_teacher_is_frozen_by_the_harness():
    record = run_job(_blobs_job("test_two_stage", {"touch_teacher": False}))
    assert record["status"] == "ok", record["error"]
    stages = record["cost"]["stages"]
    assert list(stages) == ["teacher", "student"]
    # each stage gets the job's full budget by default, and the record says so
    assert stages["teacher"]["steps"] == stages["student"]["steps"] == 10
    assert record["budget"]["stage_steps"] == {"teacher": 10, "student": 10}
    assert record["cost"]["train_s"] == stages["teacher"]["train_s"] + stages["student"]["train_s"]
    # evaluation only in the last stage (steps count across stages)
    assert [p["step"] for p in record["metrics"]["history"]] == [15, 20]
    assert set(record["metrics"]["references"]["teacher"]["domains"]) == {"a", "b", "c"}


def test_a_method_that_unfreezes_its_teacher_fails():
    record = run_job(_blobs_job("test_two_stage", {"touch_teacher": True}))
    assert record["status"] == "failed"
    assert "frozen module 'teacher' changed" in record["error"]


def test_frozen_teacher_stays_in_eval_mode_through_runner_train_calls():
    method = TwoStage()
    from xbench.harness.runner import freeze

    method.setup(None, torch.device("cpu"))
    freeze(method, ("teacher",))
    method.train(True)
    assert not method.teacher.training and method.student.training
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_draw_episode_shapes_and_label_remapping():
    y = torch.arange(6).repeat_interleave(10)
    spec = EpisodeSpec(ways=3, shots=2, queries=4)
    s_idx, s_y, q_idx, q_y = draw_episode(y, spec, torch.Generator().manual_seed(0))
    assert s_y.tolist() == [0, 0, 1, 1, 2, 2] and q_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert not set(s_idx.tolist()) & set(q_idx.tolist())  # support and query are disjoint
    for k in range(3):  # each episode class is one original class
        originals = set(y[s_idx[s_y == k]].tolist()) | set(y[q_idx[q_y == k]].tolist())
        assert len(originals) == 1


def test_fixed_episodes_depend_only_on_the_key():
    split = load_task("tiny_fewshot").build()["novel"]["test"]
    spec = EpisodeSpec(ways=3, shots=1, queries=5)
    a = fixed_episodes(split, spec, 10, "k")
    b = fixed_episodes(split, spec, 10, "k")
    assert episodes_hash(a) == episodes_hash(b)
    assert episodes_hash(fixed_episodes(split, spec, 10, "other")) != episodes_hash(a)


def test_fewshot_job_trains_on_base_episodes_and_scores_fixed_novel_episodes():
    spec = {"ways": 3, "shots": 1, "queries": 5, "test_episodes": 40, "val_episodes": 10}
    records = [run_job(_job("tiny_fewshot", "test_centroids", "fewshot", ("novel",),
                            episodes=spec, batch=4)) for _ in range(2)]
    for record in records:
        assert record["status"] == "ok", record["error"]
        episodes = record["metrics"]["episodes"]
        assert len(episodes["acc"]) == 40 and episodes["n"] == 40
        assert record["metrics"]["acc_target"] == pytest.approx(sum(episodes["acc"]) / 40)
        assert episodes["ci95"] > 0
        assert record["cost"]["latency_unit"] == "episode"
    # same fixed list for every job (a different seed would not change it)
    assert records[0]["metrics"]["episodes"]["hash"] == records[1]["metrics"]["episodes"]["hash"]
    # well-separated blobs: nearest centroid beats chance (1/3) by far
    assert records[0]["metrics"]["acc_target"] > 0.5  # chance is 1/3
    record = records[0]
    assert record["num_classes"] == 3 and record["chance"] == pytest.approx(1 / 3)
    assert record["metrics"]["test_size"] == 40 * 3 * 5  # episodes x ways x queries
    assert record["metrics"]["n_test"] == {"novel": 600}
    # per-episode accuracies at every evaluation point, so any selection can report them
    history = record["metrics"]["history"]
    assert len(history) == 2 and all(len(p["episode_accs"]) == 40 for p in history)
    chosen = next(p for p in history if p["step"] == record["metrics"]["selected_step"])
    assert chosen["episode_accs"] == [round(a, 4) for a in episodes["acc"]]


def test_fewshot_training_batches_only_hold_base_classes():
    task = load_task("tiny_fewshot")
    data = task.build()
    info = task.info(("novel",), "fewshot", Budget(batch_size=4))
    sampler = training_sampler(Centroids, info, data, seed=0,
                               episodes=EpisodeSpec(ways=2, shots=1, queries=2))
    batch = sampler.sample(0)
    base_rows = {tuple(r.tolist()) for r in data["base"]["train"].x}
    assert all(tuple(r.tolist()) in base_rows for r in batch.episode.query_x)
    assert all(tuple(r.tolist()) in base_rows for x, _ in batch.source for r in x)


def test_paired_protocol_gives_index_aligned_unlabeled_pairs():
    task = load_task("tiny_paired")
    data = task.build()
    info = task.info(("narrow",), "paired", Budget(batch_size=8))
    batch = training_sampler(PairUser, info, data, seed=0).sample(0)
    wide, narrow = batch.pairs
    assert torch.allclose(wide[:, :4] + wide[:, 4:], narrow)  # same instances, row by row
    record = run_job(_job("tiny_paired", "test_pair_user", "paired", ("narrow",), batch=8))
    assert record["status"] == "ok", record["error"]
    assert set(record["metrics"]["domains"]) == {"wide", "narrow"}
