"""Accuracy per domain and split, and inference throughput and latency."""

from __future__ import annotations

import statistics

import torch

from xbench.harness.timing import clock
from xbench.methods.base import Method
from xbench.tasks.base import Split


@torch.no_grad()
def predict_all(method: Method, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for every row of ``x``, predicted in chunks of ``batch_size``."""
    return torch.cat([method.predict(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(method: Method, split: Split, batch_size: int) -> float:
    """Fraction of ``split`` whose arg-max logit equals the label."""
    if len(split.y) == 0:
        return float("nan")
    logits = predict_all(method, split.x, batch_size)
    return (logits.argmax(dim=1) == split.y).float().mean().item()


def evaluate(method: Method, data: dict[str, dict[str, Split]], batch_size: int,
             splits: tuple[str, ...] = ("val", "test")) -> dict[str, dict[str, float]]:
    """``{domain: {split: accuracy}}`` with the method in evaluation mode."""
    method.train(False)
    try:
        return {domain: {s: accuracy(method, parts[s], batch_size) for s in splits}
                for domain, parts in data.items()}
    finally:
        method.train(True)


@torch.no_grad()
def inference_cost(method: Method, x: torch.Tensor, batch_size: int, device: torch.device,
                   repeats: int = 3, latency_calls: int = 20) -> dict[str, object]:
    """Throughput (samples/s over ``repeats`` full passes) and single-sample latency (ms).

    One warm-up pass and three warm-up single-sample calls are excluded; the
    device is synchronised at every clock read.
    """
    method.train(False)
    try:
        predict_all(method, x, batch_size)  # warm-up
        rates = []
        for _ in range(repeats):
            start = clock(device)
            predict_all(method, x, batch_size)
            rates.append(len(x) / max(clock(device) - start, 1e-9))
        one = x[:1]
        latencies = []
        for i in range(latency_calls + 3):
            start = clock(device)
            method.predict(one)
            if i >= 3:
                latencies.append((clock(device) - start) * 1000.0)
    finally:
        method.train(True)
    return {"infer_samples_per_s": statistics.median(rates), "infer_samples_per_s_samples": rates,
            "latency_ms": statistics.median(latencies), "latency_ms_samples": latencies}
