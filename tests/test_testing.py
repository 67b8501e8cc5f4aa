"""The conformance suite (xbench.testing, `xbench check`).

Every registered method must pass it; every check must fail on a method that
breaks the clause it guards (a check that cannot fail is a defect); a plugin
written outside the repository is listed, checked and run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbench
from xbench import testing
from xbench.cli import main
from xbench.errors import ExitCode, UsageError
from xbench.hparams import Choice, Uniform
from xbench.methods.base import Batch
from xbench.methods.contrastive import ContrastivePaired
from xbench.methods.erm import ERM
from xbench.methods.meta import MAML, FineTune, ProtoNet, inner_adapt
from xbench.registry import METHODS, TASKS

REPO = Path(__file__).resolve().parent.parent


# -- every registered method passes (test-only methods from conftest excluded) -------------------
@pytest.mark.parametrize("name", xbench.list_methods(exclude="test_*"))
def test_registered_method_conforms(name):
    """Every check passes, or does not apply to the method and says why (never a pytest skip)."""
    results = testing.check_method(name)
    failed = [f"{r.name}: {r.reason}" for r in results if r.status == testing.FAILED]
    assert not failed, failed
    passed = [r for r in results if r.status == testing.PASSED]
    assert len(passed) >= 5  # the static contract checks always apply
    assert all(r.reason for r in results if r.status == testing.SKIPPED)


# -- deliberately broken methods ----------------------------------------------------------------
class UnknownProtocol(ERM):
    """Declares a protocol that does not exist."""

    protocols = ("dg", "transfer")


class AdaptWithoutNeed(ERM):
    """Overrides adapt() without declaring the test_time need."""

    def adapt(self, x):
        pass


class TensorInInit(ERM):
    """Builds a tensor in __init__."""

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.scale = torch.ones(3)


class NetworkInInit(ERM):
    """Builds its network in __init__ (draws from the global generator)."""

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.head = nn.Linear(2, 2)


class CounterInInit(ERM):
    """Sets a non-hyper-parameter attribute in __init__."""

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.updates = 0


class NoDefault(ERM):
    """A hyper-parameter without a default."""

    def __init__(self, *, lr: float, weight_decay: float = 0.0):
        super().__init__(lr=lr, weight_decay=weight_decay)


class TakesKwargs(ERM):
    """Forwards **kw to its parent, so get_params cannot see lr."""

    def __init__(self, *, momentum: float = 0.9, **kw):
        super().__init__(**kw)
        self.momentum = momentum


class IgnoresLr(ERM):
    """Stores a constant instead of the lr it was given."""

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__(lr=1e-3, weight_decay=weight_decay)


class AcceptsUnknownKeys(ERM):
    """from_hparams silently drops keys it does not know."""

    @classmethod
    def from_hparams(cls, hparams):
        return cls(**{k: v for k, v in hparams.items() if k in cls.hparam_names()})


class SpaceWithStrangerKey(ERM):
    """Sweeps a key that is not a hyper-parameter."""

    search_space = {**ERM.search_space, "momentum": Uniform(0.0, 0.99)}


class SpaceReversed(ERM):
    """A range whose low end is above its high end."""

    search_space = {"lr": Uniform(0.1, 0.01)}


class SpaceWrongType(ERM):
    """Draws strings for a float hyper-parameter."""

    search_space = {"weight_decay": Choice(("none", "some"))}


class _Escaping:
    """A distribution whose draws leave its declared range."""

    low, high = 0.0, 1.0

    def sample(self, rng):
        return 2.0 + rng.random()


class SpaceDrawsOutside(ERM):
    """A custom distribution that draws outside [low, high]."""

    search_space = {"lr": _Escaping()}


class HiddenHeads(ERM):
    """Keeps an extra head in a plain list (invisible to train()/eval())."""

    def setup(self, info, device):
        super().setup(info, device)
        self.heads = [nn.Linear(3, 3)]


class NaNLoss(ERM):
    """Logs a NaN."""

    def update(self, batch):
        super().update(batch)
        return {"loss": math.nan}


class TensorLogs(ERM):
    """Returns the loss tensor instead of a float."""

    def update(self, batch):
        x, y = batch.pooled()
        loss = F.cross_entropy(self.network(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss}


class NeverSteps(ERM):
    """Computes the loss but never steps the optimizer."""

    def update(self, batch):
        x, y = batch.pooled()
        return {"loss": F.cross_entropy(self.network(x), y).item()}


class DecaysLrInPlace(ERM):
    """Anneals its own hyper-parameter attribute."""

    def update(self, batch):
        self.lr *= 0.5
        return super().update(batch)


from tests.harness.hostile import ReadsLabels  # noqa: E402


class ReturnsLabels(ERM):
    """predict returns class indices, not logits."""

    def predict(self, x):
        return self.network(x).argmax(dim=1)


class PeeksAtTestLabels(ERM):
    """Seeds its network from the target test labels it finds in the runner's frames."""

    def setup(self, info, device):
        import sys

        frame = sys._getframe(1)
        while frame is not None and "data" not in frame.f_locals:
            frame = frame.f_back
        if frame is not None:
            y = frame.f_locals["data"][info.target_domains[0]]["test"].y
            torch.manual_seed(int((y * torch.arange(len(y))).sum()))
        super().setup(info, device)


class PredictInTrainMode(ERM):
    """predict switches batch norm to training mode (updates its running statistics)."""

    def predict(self, x):
        self.network.train(True)
        out = self.network(x)
        self.network.train(False)
        return out


class PredictDrawsNoise(ERM):
    """predict adds noise from the global generator."""

    def predict(self, x):
        return self.network(x) + 0.0 * torch.randn(len(x), 1)


class BatchCentredPredict(ERM):
    """predict centres each test batch with its own mean (hidden transductive adaptation)."""

    def predict(self, x):
        return self.network(x - x.mean(dim=0, keepdim=True))


class UnseededNoise(ERM):
    """Perturbs inputs with an unseeded NumPy generator."""

    def setup(self, info, device):
        super().setup(info, device)
        self.rng = np.random.default_rng()

    def update(self, batch):
        noisy = [(x + torch.as_tensor(self.rng.normal(size=tuple(x.shape)), dtype=x.dtype), y)
                 for x, y in batch.source]
        return super().update(Batch(source=noisy, stage=batch.stage, step=batch.step))


class ReseedsItself(ERM):
    """Calls torch.manual_seed(0) in setup: every seed gives the same network."""

    def setup(self, info, device):
        torch.manual_seed(0)
        super().setup(info, device)


class UsesTargetUndeclared(ERM):
    """Reads batch.target without declaring target_unlabeled."""

    def update(self, batch):
        x, y = batch.pooled()
        logits = self.network(torch.cat([x, batch.target]))
        loss = F.cross_entropy(logits[:len(x)], y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


class TargetLabelsNotOracle(ERM):
    """Asks for target labels without being tagged oracle."""

    protocols = ("uda",)
    needs = frozenset({"target_labeled"})


class PassesTargetThrough(ERM):
    """Declares target_unlabeled but never looks at it (the anchor the issue warns about)."""

    protocols = ("uda",)
    needs = frozenset({"target_unlabeled"})


class OracleIgnoresLabels(ERM):
    """An oracle that trains on the sources, never on the target labels it asked for."""

    protocols = ("uda",)
    needs = frozenset({"target_labeled"})
    tags = frozenset({"oracle"})


class NeedsTwoDomains(ERM):
    """Compares the first two source domains; breaks with one."""

    def update(self, batch):
        logs = super().update(batch)
        (x0, _), (x1, _) = batch.source[0], batch.source[1]
        return {**logs, "gap": (x0.mean() - x1.mean()).item()}


class NeedsTwoDomainsDeclared(NeedsTwoDomains):
    """The same, declaring that it needs two source domains."""

    min_source_domains = 2


class VectorsOnly(ERM):
    """A linear model sized from input_shape[0]: only flat vectors work."""

    def setup(self, info, device):
        self.network = nn.Sequential(nn.Flatten(), nn.Linear(info.input_shape[0], info.num_classes))
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.lr)


class PretrainThenProbe(ERM):
    """Two stages: train the whole network, then re-initialise and train only the head."""

    stages = ("pretrain", "probe")

    def begin_stage(self, stage):
        if stage == "probe":
            self.network[1].reset_parameters()
            self.optimizer = torch.optim.Adam(self.network[1].parameters(), lr=self.lr)


class BadSchedule(PretrainThenProbe):
    """stage_steps gives a stage a negative budget."""

    def stage_steps(self, steps):
        return {"pretrain": steps, "probe": -1}


class ERMInDisguise(ERM):
    """A feature-alignment penalty across source domains that is zero with one source domain,
    yet declares the default min_source_domains = 1: on a one-source task it is plain ERM."""

    def update(self, batch):
        x, y = batch.pooled()
        z = self.featurizer(x)
        parts = z.split([len(t) for _, t in batch.source])
        penalty = sum(((a.mean(0) - b.mean(0)) ** 2).sum()
                      for i, a in enumerate(parts) for b in parts[i + 1:]) if len(parts) > 1 \
            else z.new_zeros(())
        loss = F.cross_entropy(self.classifier(z), y) + penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


class ERMInDisguiseDeclared(ERMInDisguise):
    """The same, declaring that it needs two source domains under dg."""

    min_source_domains = {"dg": 2}


class TimeAdapterUnderDG(ERM):
    """Adapts on test batches but declares dg, where it would be ranked against methods
    that never see target data."""

    needs = frozenset({"test_time"})
    protocols = ("dg", "tta")

    def adapt(self, x):
        pass


class ProbeNeverTrains(PretrainThenProbe):
    """The probe stage returns logs without stepping anything."""

    def update(self, batch):
        if batch.stage == "probe":
            x, y = batch.pooled()
            return {"loss": F.cross_entropy(self.network(x), y).item()}
        return super().update(batch)


class BatchStatsAdapter(ERM):
    """Test-time: re-estimate batch-norm statistics on each test batch (AdaBN-like, correct)."""

    needs = frozenset({"test_time"})
    protocols = ("tta",)

    def adapt(self, x):
        if len(x) < 2:
            return
        layers = [m for m in self.network.modules()
                  if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            m.train(True)
        with torch.no_grad():
            self.network(x)
        for m in layers:
            m.momentum = 0.1
            m.train(False)


class AdaptsInPredict(BatchStatsAdapter):
    """Test-time, but predict (not adapt) updates the statistics."""

    def predict(self, x):
        self.network.train(True)
        out = self.network(x)
        self.network.train(False)
        return out


class NoOpAdapt(ERM):
    """Declares test_time but adapt does nothing."""

    needs = frozenset({"test_time"})
    protocols = ("tta",)

    def adapt(self, x):
        return None


_SHARED_SHIFT = {"value": 0.0}


class AdaptsOutsideInstance(ERM):
    """Keeps adapted state in a module-level dict, which the runner cannot restore."""

    needs = frozenset({"test_time"})
    protocols = ("tta",)

    def adapt(self, x):
        _SHARED_SHIFT["value"] += 0.25

    def predict(self, x):
        return self.network(x) + _SHARED_SHIFT["value"]


class FailsLate(ERM):
    """Raises from step 4 on: only a full job reaches it."""

    def update(self, batch):
        if batch.step >= 4:
            raise RuntimeError("diverged at step 4")
        return super().update(batch)


# -- few-shot and paired methods, broken ----------------------------------------------------------
class FewShotWithoutPredictEpisode(ERM):
    """Declares the fewshot protocol but has no predict_episode."""

    protocols = ("fewshot",)


class EpisodesWithoutFewShot(ERM):
    """Needs episodes but does not support the only protocol that hands them out."""

    needs = frozenset({"episodes"})


class EpisodeKeepsPrototypes(ProtoNet):
    """predict_episode moves the stored prototypes toward the support set (state leaks)."""

    def predict_episode(self, support_x, support_y, query_x):
        with torch.no_grad():
            support = self.encoder(support_x)
            for k in torch.unique(support_y).tolist():
                self.prototypes[k].lerp_(support[support_y == k].mean(0), 0.5)
        return super().predict_episode(support_x, support_y, query_x)


class MAMLAdaptsInPlace(MAML):
    """predict_episode runs the inner loop on the stored weights instead of a copy."""

    def predict_episode(self, support_x, support_y, query_x):
        params = dict(self.network.named_parameters())
        with torch.enable_grad():
            adapted = inner_adapt(
                lambda p: F.cross_entropy(torch.func.functional_call(self.network, p,
                                                                     (support_x,)), support_y),
                params, inner_lr=self.inner_lr, inner_steps=1, first_order=True)
        with torch.no_grad():
            for name, p in self.network.named_parameters():
                p.copy_(adapted[name])
            return self.network(query_x)[:, :int(support_y.max()) + 1]


class QueryCentredProtoNet(ProtoNet):
    """predict_episode centres the queries on the query set's mean (transductive)."""

    def predict_episode(self, support_x, support_y, query_x):
        with torch.no_grad():
            query = self.encoder(query_x)
            query = query - query.mean(dim=0, keepdim=True)
            return self.logits(self.encoder(support_x), support_y, query)


class ReseedingProtoNet(ProtoNet):
    """Calls torch.manual_seed(0) in setup: every seed gives the same encoder."""

    def setup(self, info, device):
        torch.manual_seed(0)
        super().setup(info, device)


class ProtoNetNeverSteps(ProtoNet):
    """Computes the episode loss but never steps the optimizer."""

    def update(self, batch):
        ep = batch.episode
        z = self.encoder(torch.cat([ep.support_x, ep.query_x]))
        n = len(ep.support_y)
        return {"loss": F.cross_entropy(self.logits(z[:n], ep.support_y, z[n:]),
                                        ep.query_y).item()}


class EpisodesUndeclared(FineTune):
    """Trains on batch.episode without declaring the 'episodes' need."""

    def update(self, batch):
        ep = batch.episode
        loss = F.cross_entropy(self.network(ep.query_x), ep.query_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


class ProtoNetFailsLate(ProtoNet):
    """Raises from step 4 on: only a full few-shot job reaches it."""

    def update(self, batch):
        if batch.step >= 4:
            raise RuntimeError("diverged at step 4")
        return super().update(batch)


class PairsUndeclared(ContrastivePaired):
    """Reads batch.pairs without declaring the 'pairs' need."""

    needs = frozenset()


class IgnoresPairs(ContrastivePaired):
    """Declares 'pairs' but trains only the classifier on the source labels."""

    def update(self, batch):
        x, y = batch.pooled()
        loss = F.cross_entropy(self.head(F.normalize(self.phi(x), dim=1)), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}


class BatchNormInPredictPaired(ContrastivePaired):
    """predict runs the target encoder in training mode (updates its batch-norm statistics)."""

    def predict(self, x):
        self.psi.train(True)
        out = super().predict(x)
        self.psi.train(False)
        return out


BROKEN_FEWSHOT_PAIRED = [
    (FewShotWithoutPredictEpisode, "declarations_are_valid", "has no predict_episode"),
    (EpisodesWithoutFewShot, "declarations_are_valid", "lack 'fewshot'"),
    (ProtoNetNeverSteps, "update_changes_parameters", "changed none"),
    (EpisodeKeepsPrototypes, "predict_is_pure", "predict_episode (evaluation mode) changed "
                                                "prototypes"),
    (MAMLAdaptsInPlace, "predict_is_pure", "changed network."),
    (QueryCentredProtoNet, "predict_is_per_sample", "change with the other queries"),
    (ReseedingProtoNet, "different_seeds_differ", "identical logits"),
    (EpisodesUndeclared, "gets_only_declared_data", "protocol fewshot, given only source"),
    (ProtoNetFailsLate, "run_job_is_ok", "diverged at step 4"),
    (PairsUndeclared, "gets_only_declared_data", "protocol paired, given only source"),
    (IgnoresPairs, "uses_declared_data", "target side of batch.pairs"),
    (BatchNormInPredictPaired, "predict_is_pure", "psi."),
]


BROKEN = [
    (UnknownProtocol, "declarations_are_valid", "unknown protocol"),
    (AdaptWithoutNeed, "declarations_are_valid", "overrides adapt()"),
    (TargetLabelsNotOracle, "declarations_are_valid", "not tagged 'oracle'"),
    (TensorInInit, "init_stores_only_hparams", "built scale (Tensor)"),
    (NetworkInInit, "init_stores_only_hparams", "random generator"),
    (CounterInInit, "init_stores_only_hparams", "['updates']"),
    (NoDefault, "hparams_have_defaults", "'lr' has no default"),
    (TakesKwargs, "hparams_have_defaults", "**kw"),
    (IgnoresLr, "get_params_round_trips", "ignores the value passed for lr"),
    (AcceptsUnknownKeys, "get_params_round_trips", "accepted the unknown"),
    (SpaceWithStrangerKey, "search_space_matches_hparams", "['momentum'] are not"),
    (SpaceReversed, "search_space_matches_hparams", "low > high"),
    (SpaceWrongType, "search_space_matches_hparams", "a str, but the default"),
    (SpaceDrawsOutside, "search_space_matches_hparams", "outside its range"),
    (HiddenHeads, "modules_are_visible", "heads[0]"),
    (NaNLoss, "update_returns_finite_floats", "loss=nan"),
    (TensorLogs, "update_returns_finite_floats", "type Tensor"),
    (NeverSteps, "update_changes_parameters", "changed none"),
    (DecaysLrInPlace, "training_keeps_hparams", "lr: 0.001 ->"),
    (ReturnsLabels, "predict_returns_logits", "shape (1,)"),
    (PredictInTrainMode, "predict_is_pure", "running_mean"),
    (PredictDrawsNoise, "predict_is_pure", "global torch random generator"),
    (BatchCentredPredict, "predict_is_per_sample", "rest of the batch"),
    (UnseededNoise, "same_seed_same_result", "different logits"),
    (ReseedsItself, "different_seeds_differ", "identical logits"),
    (UsesTargetUndeclared, "gets_only_declared_data", "given only source"),
    (TargetLabelsNotOracle, "gets_only_declared_data", "ProtocolError"),
    (PassesTargetThrough, "uses_declared_data", "does not learn from it"),
    (OracleIgnoresLabels, "uses_declared_data", "labels of batch.target_labeled"),
    (NeedsTwoDomains, "single_source_domain", "declare min_source_domains = 2"),
    (VectorsOnly, "works_on_images", "on image inputs (1, 8, 8)"),
    (BadSchedule, "stages_are_exercised", "non-negative integer"),
    (ERMInDisguise, "not_erm_on_one_source", "bitwise ERM's"),
    (TimeAdapterUnderDG, "declarations_are_valid", "protocols = ('tta',) only"),
    (ProbeNeverTrains, "stages_are_exercised", "stage 'probe' changed none"),
    (AdaptsInPredict, "adapt_then_predict_is_pure", "predict after adapt changed"),
    (NoOpAdapt, "adapt_changes_predictions", "does not adapt"),
    (AdaptsOutsideInstance, "evaluation_restores_adapted_state", "leaked"),
    (FailsLate, "run_job_is_ok", "diverged at step 4"),
    (ReadsLabels, "target_labels_never_reach_the_method", "follows the target test labels"),
    (PeeksAtTestLabels, "target_labels_never_reach_the_method", "training or model selection "
                                                                "changed"),
    *BROKEN_FEWSHOT_PAIRED,
]


@pytest.mark.parametrize("broken, check, reason", BROKEN,
                         ids=[f"{cls.__name__}-{check}" for cls, check, _ in BROKEN])
def test_check_fails_on_a_method_that_breaks_it(broken, check, reason):
    result = testing.run_check(broken, check)
    assert result.status == "failed", result
    assert reason in result.reason, result.reason
    assert result.method == broken.__name__ and result.name == check


def test_every_check_is_shown_to_fail_on_some_broken_method():
    covered = {check for _, check, _ in BROKEN}
    assert covered == {c.name for c in testing.CHECKS}


@pytest.mark.parametrize("good", [ERM, PretrainThenProbe, BatchStatsAdapter,
                                  NeedsTwoDomainsDeclared, ERMInDisguiseDeclared])
def test_correct_methods_pass_every_check_that_applies(good):
    results = testing.check_method(good)
    assert [r.id for r in results if r.status == "failed"] == [], \
        [(r.id, r.reason) for r in results if r.status == "failed"]


def test_applicable_checks_run_and_the_rest_are_skipped_with_a_reason():
    staged = {r.name: r for r in testing.check_method(PretrainThenProbe)}
    assert staged["stages_are_exercised"].status == "passed"
    tta = {r.name: r for r in testing.check_method(BatchStatsAdapter)}
    for name in ("adapt_then_predict_is_pure", "adapt_changes_predictions",
                 "evaluation_restores_adapted_state"):
        assert tta[name].status == "passed", tta[name]
    erm = {r.name: r for r in testing.check_method("erm")}
    assert erm["adapt_changes_predictions"].status == "skipped"
    assert "no 'test_time' need" in erm["adapt_changes_predictions"].reason
    assert all(r.reason for r in erm.values() if r.status == "skipped")
    declared = testing.run_check(NeedsTwoDomainsDeclared, "single_source_domain")
    assert declared.status == "skipped" and "min_source_domains = 2" in declared.reason
    for name in ("erm", "kd_scratch"):  # ERM and reference rows are ERM by design
        assert testing.run_check(name, "not_erm_on_one_source").status == "skipped"
    assert testing.run_check(ERMInDisguiseDeclared, "not_erm_on_one_source").status == "skipped"


#: The behavioural checks every fewshot-only and paired-only method now gets.
BEHAVIOURAL = ("modules_are_visible", "update_returns_finite_floats", "update_changes_parameters",
               "training_keeps_hparams", "predict_returns_logits", "predict_is_pure",
               "predict_is_per_sample", "same_seed_same_result", "different_seeds_differ",
               "gets_only_declared_data", "single_source_domain", "works_on_images",
               "run_job_is_ok")


@pytest.mark.parametrize("name, protocol", [("protonet", "fewshot"),
                                            ("contrastive_paired", "paired")])
def test_fewshot_and_paired_methods_get_the_behavioural_checks(name, protocol):
    results = {r.name: r for r in testing.check_method(name)}
    assert [r.id for r in results.values() if r.status == "failed"] == []
    assert [n for n in BEHAVIOURAL if results[n].status != "passed"] == [], \
        [(n, results[n].reason) for n in BEHAVIOURAL if results[n].status != "passed"]
    assert f"under {protocol}" in results["run_job_is_ok"].reason
    assert all("the check task" not in r.reason for r in results.values())
    if protocol == "fewshot":
        assert "predict_episode" in results["predict_returns_logits"].reason
        assert results["gets_only_declared_data"].reason == "fewshot: source, episodes"
    else:
        assert "(1, 16)" in results["predict_returns_logits"].reason  # scored on the signals
        assert results["uses_declared_data"].status == "passed"


def test_check_tasks_pose_fewshot_and_paired():
    fewshot = testing._setting(ProtoNet)
    assert fewshot.info.protocol == "fewshot" and fewshot.spec == testing.EPISODES
    assert fewshot.info.source_domains == ("d0",) and fewshot.info.target_domains == ("d1",)
    for parts in fewshot.data.values():  # every class often enough for an episode in every split
        for split in parts.values():
            counts = torch.bincount(split.y, minlength=fewshot.info.num_classes)
            assert int(counts.min()) >= fewshot.spec.shots + fewshot.spec.queries
    classes = fewshot.task.domain_classes  # the target's (novel) classes are not the source's
    assert len(classes["d0"]) == len(classes["d1"]) == 3 and not set(classes["d0"]) & set(
        classes["d1"])
    episode = fewshot.episode
    assert episode.support_x.shape == (2, 6) and episode.query_x.shape == (6, 6)
    paired = testing._setting(ContrastivePaired)
    assert paired.info.paired and paired.info.protocol == "paired"
    assert paired.info.input_shapes == {"d0": (6,), "d1": (1, 16)}
    a, b = paired.data["d0"]["test"], paired.data["d1"]["test"]
    assert torch.equal(a.y, b.y) and b.x.shape[1:] == (1, 16)
    assert paired.probe().shape[1:] == (1, 16)


def test_gets_only_declared_data_catches_a_sampler_that_leaks(monkeypatch):
    """The guard is real: episodes from the novel classes, or pairs out of step, fail it."""
    from xbench.harness.sampling import BatchSampler
    from xbench.tasks.base import Split

    def leaky(self, cls, seed=0):
        source = [self.data[d]["train"] for d in self.info.source_domains]
        target = self.data[self.info.target_domains[0]]["train"]
        if self.protocol == "fewshot":
            return BatchSampler(source, self.info.batch_size, seed, prepare=self.task.prepare,
                                episodes=(target, self.spec))
        shuffled = Split(target.x.flip(0), target.y.flip(0))
        return BatchSampler(source, self.info.batch_size, seed, prepare=self.task.prepare,
                            pairs=(source[0], shuffled))

    monkeypatch.setattr(testing._Setting, "sampler", leaky)
    fewshot = testing.run_check("protonet", "gets_only_declared_data")
    assert fewshot.status == "failed" and "novel classes leaked" in fewshot.reason
    paired = testing.run_check("contrastive_paired", "gets_only_declared_data")
    assert paired.status == "failed" and "not rows i of the source and target" in paired.reason


def test_check_method_takes_names_classes_and_instances():
    by_name = testing.check_method("erm", checks=["predict_returns_logits"])
    by_class = testing.check_method(ERM, checks=["predict_returns_logits"])
    assert [r.id for r in by_name] == [r.id for r in by_class] == ["erm-predict_returns_logits"]
    instance = testing.check_method(ERM(lr=0.05), checks=["get_params_round_trips"])
    assert instance[0].status == "passed"
    assert instance[0].id == "erm(lr=0.05)-get_params_round_trips"
    with pytest.raises(UsageError, match="no check matches 'nope'"):
        testing.check_method("erm", checks=["nope"])
    with pytest.raises(TypeError, match="not a subclass of xbench.Method"):
        testing.check_method(dict)


def test_checks_leave_global_state_alone():
    torch.manual_seed(123)
    expected = torch.get_rng_state()
    threads = torch.get_num_threads()
    testing.run_check(FailsLate, "run_job_is_ok")
    assert torch.equal(torch.get_rng_state(), expected)
    assert torch.get_num_threads() == threads
    # the unregistered class was registered only for the job, and its attributes restored
    assert not [n for n in METHODS.names() if n.startswith("xbench_check_")]
    assert "registered_name" not in FailsLate.__dict__ and "tags" not in FailsLate.__dict__
    assert testing.CHECK_TASK not in TASKS
    testing.run_check(ProtoNetFailsLate, "run_job_is_ok")
    assert torch.equal(torch.get_rng_state(), expected)
    assert not [n for n in METHODS.names() if n.startswith("xbench_check_")]
    assert testing.CheckFewShotBlobs.registered_name not in TASKS


def test_a_failure_names_the_error_and_where_it_was_raised():
    result = testing.run_check(NeverSteps, "update_changes_parameters")
    assert result.status == "failed"
    raised = testing.run_check(UsesTargetUndeclared, "gets_only_declared_data")
    assert "TypeError" in raised.reason and "test_testing.py" in raised.reason
    assert "in update" in raised.reason


def test_parametrize_with_checks_ids():
    mark = testing.parametrize_with_checks(["erm", NaNLoss])
    argnames, params = mark.args
    assert argnames == "method, check"
    ids = [p.id for p in params]
    assert "erm-predict_is_pure" in ids and "NaNLoss-update_returns_finite_floats" in ids
    assert len(ids) == 2 * len(testing.CHECKS)


# -- the command line ---------------------------------------------------------------------------
def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_check_passes_erm(capsys):
    code, out, _ = run_cli(capsys, "check", "erm")
    assert code == ExitCode.OK
    lines = out.splitlines()
    assert len(lines) == len(testing.CHECKS) + 1
    assert lines[0].startswith("PASSED") and "erm-declarations_are_valid" in lines[0]
    assert any(line.startswith("SKIPPED") and "no 'test_time' need" in line for line in lines)
    assert "0 failed" in lines[-1] and "on 1 method(s)" in lines[-1]


def test_cli_check_failures_give_exit_code_1(capsys):
    code, out, err = run_cli(capsys, "check", "test_raising",
                             "--checks", "update_*,predict_is_pure")
    assert code == ExitCode.FAILURES
    assert "FAILED   test_raising-update_returns_finite_floats" in out
    assert "RuntimeError: boom" in out
    assert "3 checks on 1 method(s): 0 passed, 3 failed" in out
    assert "failed: test_raising-update_returns_finite_floats" in err


def test_cli_check_unknown_names_give_exit_code_2(capsys):
    code, _, err = run_cli(capsys, "check", "ermm")
    assert code == ExitCode.USAGE_ERROR and "Did you mean: erm" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "check", "zzz*")
    assert code == ExitCode.USAGE_ERROR and "no registered method matches 'zzz*'" in err
    code, _, err = run_cli(capsys, "check", "erm", "--checks", "nope")
    assert code == ExitCode.USAGE_ERROR and "no check matches 'nope'" in err


# -- a plugin written outside the repository ------------------------------------------------------
PLUGIN_MODULE = '''
"""A method shipped by a third-party distribution (it does not derive from ERM)."""
import torch
import torch.nn.functional as F
from torch import nn

from xbench import networks
from xbench.hparams import LogUniform, Uniform
from xbench.methods.base import Method


class MomentumNet(Method):
    """Pooled cross-entropy trained with SGD and momentum (a plugin for the conformance test)."""

    protocols = ("dg",)
    search_space = {"lr": LogUniform(1e-3, 1e-1), "momentum": Uniform(0.0, 0.95)}

    def __init__(self, *, lr: float = 0.05, momentum: float = 0.9):
        self.lr = lr
        self.momentum = momentum

    def setup(self, info, device):
        features = networks.featurizer(info.input_shape)
        self.network = nn.Sequential(
            features, networks.classifier(features.n_outputs, info.num_classes)).to(device)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=self.lr,
                                         momentum=self.momentum)

    def update(self, batch):
        x, y = batch.pooled()
        loss = F.cross_entropy(self.network(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def predict(self, x):
        return self.network(x)
'''

PLUGIN_SUITE = '''
name = "plugin_smoke"
seeds = [0]
methods = ["momentum_net"]
[budget]
steps = 10
batch_size = 8
eval_every = 5
[[tasks]]
name = "digits_rotated"
'''


def test_plugin_outside_the_repository_is_listed_checked_and_run(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "xb_momentum_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = site / "xb_momentum_plugin-0.4.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: xb-momentum-plugin\nVersion: 0.4.2\n")
    (info / "entry_points.txt").write_text(
        "[xbench.methods]\nmomentum_net = xb_momentum_plugin:MomentumNet\n")
    (info / "top_level.txt").write_text("xb_momentum_plugin\n")
    suite = tmp_path / "plugin_smoke.toml"
    suite.write_text(PLUGIN_SUITE)
    env = {k: v for k, v in os.environ.items() if k != "XBENCH_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["OMP_NUM_THREADS"] = "1"  # tiny work; three processes share the CI machine's cores
    out = tmp_path / "runs"
    commands = {"list": ["list", "methods"], "check": ["check", "momentum_net"],
                "run": ["run", str(suite), "--methods", "momentum_net", "--out", str(out),
                        "--quiet"]}
    # Three fresh interpreters (each imports torch): started together, not one after another.
    procs = {name: subprocess.Popen([sys.executable, "-m", "xbench.cli", *args], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, args in commands.items()}
    done = {name: (proc, *proc.communicate(timeout=600)) for name, proc in procs.items()}

    listed, listed_out, listed_err = done["list"]
    assert listed.returncode == 0, listed_err
    row = next(line for line in listed_out.splitlines() if line.startswith("momentum_net"))
    assert "xb-momentum-plugin==0.4.2" in row

    checked, checked_out, checked_err = done["check"]
    assert checked.returncode == 0, checked_out + checked_err
    assert "momentum_net-run_job_is_ok" in checked_out and " 0 failed" in checked_out

    ran, ran_out, ran_err = done["run"]
    assert ran.returncode == 0, ran_out + ran_err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["status"] == "ok"
    assert records[0]["method"] == "momentum_net"
    assert records[0]["method_origin"] == "xb-momentum-plugin==0.4.2"
