"""Test-time adaptation: a source-trained model adapts on unlabeled evaluation batches.

Both methods train exactly like ERM on the sources (no target data in
training) and run under their own protocol, ``tta``, whose reference row is
ERM without adaptation: they are never compared with methods that see no
target data. At evaluation the runner streams unlabeled target batches
(``Stream``: batch size and ``reset``/``continual`` mode, recorded as
``stream``), calls ``adapt(x)`` on each before ``predict(x)`` and restores
the trained state (before every batch, or after the pass), so adaptation is
transductive (records say ``transductive: true``) and never leaks into
training or into the next pass. ``predict`` changes nothing.

A batch of fewer than two samples carries no usable batch statistics (for
flat features their variance is zero), so ``adapt`` leaves the model as it is
for such batches; the runner's single-sample latency therefore excludes
adaptation, while its throughput (full batches) includes it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from xbench.hparams import IntUniform, LogUniform
from xbench.losses import prediction_entropy
from xbench.methods.erm import ERM
from xbench.registry import register_method
from xbench.tasks.base import TaskInfo

MIN_ADAPT_BATCH = 2


def norm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-normalisation layer of ``network``, in order."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def batch_statistics(layers: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Inside: ``layers`` normalise with the statistics of the batch being forwarded.

    Their running statistics are reset and, with ``momentum=None`` (a cumulative
    average), become exactly that batch's mean and (unbiased) variance, which
    evaluation-mode forwards then use. Mode and momentum are restored on exit.
    """
    saved = [(m.training, m.momentum) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train(True)
    try:
        yield
    finally:
        for m, (training, momentum) in zip(layers, saved):
            m.momentum = momentum
            m.train(training)


@register_method("adabn", tags={"tta"})
class AdaBN(ERM):
    """AdaBN (Li et al., 2016): re-estimate batch-norm statistics on each test batch.

    "Revisiting Batch Normalization for Practical Domain Adaptation". ERM whose
    batch-norm statistics are re-estimated on each unlabeled evaluation batch
    before predicting; all weights stay as trained.
    """

    protocols = ("tta",)
    needs = frozenset({"test_time"})

    def adapt(self, x: torch.Tensor) -> None:
        if len(x) < MIN_ADAPT_BATCH:
            return
        with torch.no_grad(), batch_statistics(norm_layers(self.network)):
            self.network(x)


@register_method("tent", tags={"tta"})
class Tent(ERM):
    """TENT (Wang et al., 2021): minimise test-batch entropy via batch-norm affine parameters.

    "Tent: Fully Test-Time Adaptation by Entropy Minimization". ERM, then on
    each unlabeled evaluation batch ``adapt_steps`` Adam steps (``adapt_lr``,
    the paper's optimizer and rate for small images) on the mean prediction
    entropy, updating only the batch-norm affine parameters, with batch norm
    normalising by the batch's statistics. As in the reference
    ``forward_and_adapt``, the batch is predicted by the forward pass it
    adapted on (the outputs computed before the last optimizer step):
    ``predict(x)`` right after ``adapt(x)`` returns them. Whether adaptation
    carries over batches is the stream's mode (``reset`` or ``continual``;
    the adaptation optimizer's state is restored with the model).
    """

    protocols = ("tta",)
    needs = frozenset({"test_time"})
    search_space = {**ERM.search_space, "adapt_lr": LogUniform(1e-4, 1e-2),
                    "adapt_steps": IntUniform(1, 5)}

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 0.0, adapt_lr: float = 1e-3,
                 adapt_steps: int = 1):
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.adapt_lr = adapt_lr
        self.adapt_steps = adapt_steps

    def setup(self, info: TaskInfo, device: torch.device) -> None:
        super().setup(info, device)
        self.adapt_optimizer = torch.optim.Adam(self._affine_parameters(), lr=self.adapt_lr)

    def _affine_parameters(self) -> list[nn.Parameter]:
        return [p for m in norm_layers(self.network) if m.affine for p in (m.weight, m.bias)]

    def adapt(self, x: torch.Tensor) -> None:
        self.adapted = None
        if len(x) < MIN_ADAPT_BATCH:
            return
        layers = norm_layers(self.network)
        params = self._affine_parameters()
        for _ in range(self.adapt_steps):
            with batch_statistics(layers):
                logits = self.network(x)
                loss = prediction_entropy(logits).mean()
            # Gradients of the affine parameters only: nothing else gets a .grad.
            for p, grad in zip(params, torch.autograd.grad(loss, params)):
                p.grad = grad
            self.adapt_optimizer.step()
            self.adapt_optimizer.zero_grad(set_to_none=True)
        self.adapted = (x, logits.detach())  # what the reference predicts for this batch
        # Store the batch's statistics under the adapted parameters for other inputs.
        with torch.no_grad(), batch_statistics(layers):
            self.network(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        adapted = getattr(self, "adapted", None)
        if adapted is not None and adapted[0] is x:
            return adapted[1]
        return self.network(x)
