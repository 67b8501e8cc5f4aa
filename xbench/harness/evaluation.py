"""Accuracy per domain and split, and inference throughput and latency.

For test-time-adaptation methods (``needs`` has ``test_time``, protocol
``tta``) the inputs are an adaptation stream (``Stream``): batches of
``stream.batch_size`` in order, each first passed to ``method.adapt`` and then
predicted. In ``reset`` mode the trained state is restored before every batch
(episodic); in ``continual`` mode adaptation carries over the stream. Either
way the trained state is restored after each pass, so evaluation never leaks
into training or into the next evaluation. Other methods predict in chunks of
the evaluation batch size, which does not change their predictions.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
from typing import Callable, Iterator

import torch

from xbench.errors import JobError
from xbench.harness.timing import clock
from xbench.methods.base import Method
from xbench.tasks.base import Split, Stream


def is_transductive(method: Method) -> bool:
    """True for methods that adapt on unlabeled evaluation batches."""
    return "test_time" in type(method).needs


@contextlib.contextmanager
def evaluation_mode(method: Method) -> Iterator[None]:
    """Modules in eval mode, and for test-time methods the trained state restored on exit."""
    snapshot = copy.deepcopy(vars(method)) if is_transductive(method) else None
    method.train(False)
    try:
        yield
    finally:
        if snapshot is not None:
            _restore(method, snapshot)
        method.train(True)


def _restore(method: Method, snapshot: dict) -> None:
    vars(method).clear()
    vars(method).update(snapshot)


Prepare = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class InvalidPredictionError(JobError):
    """``predict`` returned something that is not one finite row of logits per input."""


def check_logits(out: object, n: int, num_classes: int | None, what: str = "predict") -> None:
    """Raise :class:`InvalidPredictionError` unless ``out`` is a finite ``(n, num_classes)``
    tensor (any number of columns when ``num_classes`` is None)."""
    if not isinstance(out, torch.Tensor):
        raise InvalidPredictionError(f"{what} returned {type(out).__name__}, not a tensor of "
                                     f"logits")
    expected = f"({n}, {num_classes if num_classes is not None else 'C'})"
    if out.dim() != 2 or out.shape[0] != n or (num_classes is not None
                                                 and out.shape[1] != num_classes):
        raise InvalidPredictionError(f"{what} returned shape {tuple(out.shape)} for {n} inputs; "
                                     f"expected {expected}: one row of class logits per input")
    if not out.is_floating_point():
        raise InvalidPredictionError(f"{what} returned {out.dtype} values; logits must be "
                                     f"floating point")
    if not bool(torch.isfinite(out).all()):
        raise InvalidPredictionError(f"{what} returned NaN or infinite logits")


def predict_all(method: Method, x: torch.Tensor, batch_size: int,
                prepare: Prepare = _identity, stream: Stream | None = None,
                num_classes: int | None = None, validate: bool = False) -> torch.Tensor:
    """Logits for every row of ``x`` in chunks of ``batch_size``.

    A transductive method adapts on each chunk first; with a ``stream`` the
    chunks are the stream's batches, and in ``reset`` mode the state is put
    back before each one (without a stream: continual, in ``batch_size``
    chunks). ``prepare`` turns stored inputs into network inputs. With
    ``validate``, every chunk's output must be finite with shape
    ``(len(chunk), num_classes)`` (:func:`check_logits`), else the job fails.
    """
    adapt = is_transductive(method)
    if adapt and stream is not None:
        batch_size = stream.batch_size
    snapshot = copy.deepcopy(vars(method)) if adapt and stream is not None \
        and stream.mode == "reset" and len(x) > batch_size else None
    out = []
    for i in range(0, len(x), batch_size):
        chunk = prepare(x[i:i + batch_size])
        if adapt:
            if snapshot is not None and i > 0:
                _restore(method, copy.deepcopy(snapshot))
            method.adapt(chunk)
        n = len(chunk)
        with torch.no_grad():
            logits = method.predict(chunk)
        if validate:
            check_logits(logits, n, num_classes)
        out.append(logits)
    return torch.cat(out)


def logits_of(method: Method, split: Split, batch_size: int,
              prepare: Prepare = _identity, stream: Stream | None = None,
              num_classes: int | None = None) -> torch.Tensor:
    """Logits for a whole split, starting from the trained state (validated: finite, one row
    per input, ``num_classes`` columns when given)."""
    with evaluation_mode(method):
        return predict_all(method, split.x, batch_size, prepare, stream, num_classes,
                           validate=True).float()


def accuracy(method: Method, split: Split, batch_size: int, prepare: Prepare = _identity,
             stream: Stream | None = None) -> float:
    """Fraction of ``split`` whose arg-max logit equals the label."""
    if len(split.y) == 0:
        return float("nan")
    logits = logits_of(method, split, batch_size, prepare, stream)
    return (logits.argmax(dim=1) == split.y).float().mean().item()


def label_free_scores(logits: torch.Tensor) -> dict[str, float]:
    """Scores that read predictions only, never labels (for UDA model selection).

    ``entropy``: mean prediction entropy (lower is more confident).
    ``im``: information maximisation, H(mean p) - mean H(p) (Shi & Sha, 2012;
    Liang et al., 2020): confident and diverse predictions score high.
    """
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    conditional = -(p * log_p).sum(1).mean()
    marginal = p.mean(0)
    diversity = -(marginal * torch.log(marginal.clamp_min(1e-12))).sum()
    return {"entropy": conditional.item(), "im": (diversity - conditional).item()}


def evaluate(method: Method, data: dict[str, dict[str, Split]], batch_size: int,
             prepare: Prepare = _identity, stream: Stream | None = None,
             num_classes: int | None = None, keep: tuple[str, ...] = ()) -> dict[str, dict]:
    """Accuracy per domain and split, and label-free scores of every validation split.

    Returns ``{"acc": {domain: {"val": a, "test": a}}, "label_free": {domain:
    {"entropy": e, "im": i}}, "pred_test": {domain: classes}}`` (predicted classes
    of the test split of each domain in ``keep``); each pass starts from the
    trained state (and, under ``tta``, every split is an adaptation ``stream``).
    """
    acc: dict[str, dict[str, float]] = {}
    label_free: dict[str, dict[str, float]] = {}
    pred_test: dict[str, torch.Tensor] = {}
    for domain, parts in data.items():
        acc[domain] = {}
        for split in ("val", "test"):
            logits = logits_of(method, parts[split], batch_size, prepare, stream,
                               num_classes)
            acc[domain][split] = (logits.argmax(dim=1) == parts[split].y).float().mean().item() \
                if len(parts[split].y) else float("nan")
            if split == "val" and len(logits):
                label_free[domain] = label_free_scores(logits)
            if split == "test" and domain in keep:
                pred_test[domain] = logits.argmax(dim=1)
    return {"acc": acc, "label_free": label_free, "pred_test": pred_test}


def inference_cost(method: Method, x: torch.Tensor, batch_size: int, device: torch.device,
                   prepare: Prepare = _identity, repeats: int = 3,
                   latency_calls: int = 20, stream: Stream | None = None) -> dict[str, object]:
    """Throughput (samples/s over ``repeats`` full passes) and single-sample latency (ms).

    One warm-up pass and three warm-up single-sample calls are excluded; the
    device is synchronised at every clock read. Test-time adaptation is
    included in the time, as it is part of predicting.
    """
    rates = []
    for i in range(repeats + 1):
        with evaluation_mode(method):
            start = clock(device)
            predict_all(method, x, batch_size, prepare, stream)
            seconds = clock(device) - start
        if i > 0:  # the first pass is a warm-up
            rates.append(len(x) / max(seconds, 1e-9))
    latencies = []
    with evaluation_mode(method):
        for i in range(latency_calls + 3):
            start = clock(device)
            predict_all(method, x[:1], 1, prepare)
            if i >= 3:
                latencies.append((clock(device) - start) * 1000.0)
    return {"infer_samples_per_s": statistics.median(rates), "infer_samples_per_s_samples": rates,
            "latency_ms": statistics.median(latencies), "latency_ms_samples": latencies}
