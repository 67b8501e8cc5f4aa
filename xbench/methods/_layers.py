"""Small building blocks shared by methods: gradient reversal and an MLP head."""

from __future__ import annotations

import torch
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; gradient times ``-scale`` backward (Ganin et al., 2016)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = float(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; gradients flowing back through it are multiplied by ``-scale``."""
    return GradientReversal.apply(x, scale)


def mlp_head(n_inputs: int, n_outputs: int, width: int = 128) -> nn.Sequential:
    """Two hidden ReLU layers then a linear output (e.g. a domain discriminator)."""
    return nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(), nn.Linear(width, width),
                         nn.ReLU(), nn.Linear(width, n_outputs))


def take_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimisation step on ``loss``: zero the gradients, backpropagate, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
