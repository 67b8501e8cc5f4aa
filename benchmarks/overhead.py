"""Harness overhead: one job through ``xbench run`` vs the same work in a bare PyTorch loop.

    python benchmarks/overhead.py                       # 3 alternating pairs (about 12 min)
    python benchmarks/overhead.py --pairs 5 --steps 60 --resolution 28

The network is DomainBed's MNIST-CNN (Gulrajani & Lopez-Paz, 2021: four 3x3
convolutions, GroupNorm, global average pooling, a linear head), registered
here as a third-party-style plugin method ``domainbed_cnn_erm`` (ERM, Adam
lr 1e-3). Both sides train it on ``digits_rotated`` at ``--resolution`` px
(the same tensors: the bare loop reads them from the task), ``--batch`` samples
per source domain per step (5 source domains), ``--steps`` steps, evaluating
every source and target domain's val and test split every ``--eval-every``
steps, on one torch thread, on the CPU.

* A = ``xbench run SUITE --quiet --threads 1`` in a fresh Python process (the
  plugin registered first): planning, seeding, sampling, device-synchronised
  clocks, evaluation and model selection, the inference-cost measurement, the
  record (fsync) and the closing leaderboard table are all inside its wall time.
* B = a bare loop in a fresh Python process: the same data, network, optimizer,
  batches, steps and evaluation schedule, nothing else.

A and B alternate ``--pairs`` times (ABAB...), each in a fresh subprocess. Per
pair it prints the wall time of the whole process (start-up included), the
training step rate (samples/s over timed steps, the first ``min(10, steps/5)``
steps excluded on both sides, as the runner does) and the process's peak RSS
(``ru_maxrss`` of the child); then the median ratio A / B of each, with its
range. Targets: wall ratio <= 1.03, peak-memory ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

METHOD = "domainbed_cnn_erm"


class MNISTCNN(nn.Module):
    """DomainBed's ``MNIST_CNN`` featurizer (domainbed/networks.py), 128 features."""

    n_outputs = 128

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.bn0, self.bn1 = nn.GroupNorm(8, 64), nn.GroupNorm(8, 128)
        self.bn2, self.bn3 = nn.GroupNorm(8, 128), nn.GroupNorm(8, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn0(F.relu(self.conv1(x)))
        x = self.bn1(F.relu(self.conv2(x)))
        x = self.bn2(F.relu(self.conv3(x)))
        x = self.bn3(F.relu(self.conv4(x)))
        return self.avgpool(x).flatten(1)


def network(channels: int, classes: int) -> nn.Module:
    torch.manual_seed(0)
    features = MNISTCNN(channels)
    return nn.Sequential(features, nn.Linear(features.n_outputs, classes))


def register_plugin() -> None:
    """Register ``domainbed_cnn_erm`` the way a plugin distribution would."""
    from xbench import Method, register_method

    @register_method(METHOD, tags={"dg"})
    class DomainBedCNNERM(Method):
        """ERM with DomainBed's MNIST-CNN (benchmark plugin)."""

        protocols = ("dg",)

        def __init__(self, *, lr: float = 1e-3):
            self.lr = lr

        def setup(self, info, device):
            self.net = network(info.input_shape[0], info.num_classes).to(device)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)

        def update(self, batch):
            x, y = batch.pooled()
            loss = F.cross_entropy(self.net(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            return {"loss": loss.item()}

        def predict(self, x):
            return self.net(x)


SUITE = """
name = "overhead"
seeds = [0]
methods = ["{method}"]
[budget]
steps = {steps}
batch_size = {batch}
eval_every = {eval_every}
[[tasks]]
name = "digits_rotated"
targets = ["75"]
options = {{ version = "1", resolution = {resolution} }}
"""


def child_xbench(args: argparse.Namespace) -> dict:
    register_plugin()
    from xbench.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "overhead.toml"
        suite.write_text(SUITE.format(method=METHOD, steps=args.steps, batch=args.batch,
                                      eval_every=args.eval_every, resolution=args.resolution))
        out = Path(tmp) / "out"
        code = main(["run", str(suite), "--out", str(out), "--quiet", "--threads", "1"])
        record = json.loads((out / "records.jsonl").read_text().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"xbench run failed: {record.get('error')}")
    return {"train_samples_per_s": record["cost"]["train_samples_per_s"],
            "acc_target": record["metrics"]["acc_target"]}


def child_bare(args: argparse.Namespace) -> dict:
    from xbench.registry import load_task

    torch.set_num_threads(1)
    task = load_task("digits_rotated", version="1", resolution=args.resolution)
    data = task.build()
    target = "75"
    sources = [d for d in task.domains if d != target]
    prepare = task.prepare
    torch.manual_seed(0)
    net = network(task.input_shape[0], task.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    warmup = min(10, args.steps // 5)
    timed, samples, acc = 0.0, 0, None
    for step in range(1, args.steps + 1):
        xs, ys = [], []
        for d in sources:
            split = data[d]["train"]
            idx = torch.randint(len(split.x), (args.batch,), generator=g)
            xs.append(prepare(split.x[idx]))
            ys.append(split.y[idx])
        x, y = torch.cat(xs), torch.cat(ys)
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if step > warmup:
            timed += time.perf_counter() - start
            samples += len(x)
        if step % args.eval_every == 0 or step == args.steps:
            net.eval()
            with torch.no_grad():
                accs = {}
                for d, parts in data.items():
                    for s in ("val", "test"):
                        part = parts[s]
                        logits = torch.cat([net(prepare(part.x[i:i + 512]))
                                            for i in range(0, len(part.x), 512)])
                        accs[d, s] = (logits.argmax(1) == part.y).float().mean().item()
            net.train()
            acc = accs[target, "test"]
    return {"train_samples_per_s": samples / timed, "acc_target": acc}


def measure(kind: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--steps", str(args.steps),
               "--batch", str(args.batch), "--eval-every", str(args.eval_every),
               "--resolution", str(args.resolution)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64, help="per source domain (5 of them)")
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--child", choices=["xbench", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child_xbench(args) if args.child == "xbench" else child_bare(args)
        result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return 0
    print(f"# {args.pairs} pairs; digits_rotated {args.resolution}px, {args.steps} steps x 5 x "
          f"{args.batch}, eval every {args.eval_every}; 1 thread; {platform()}", flush=True)
    print(f"{'pair':>4} {'side':>6} {'wall s':>7} {'samples/s':>10} {'peak RSS MB':>12} "
          f"{'acc':>6}", flush=True)
    ratios: dict[str, list[float]] = {"wall": [], "rate": [], "mem": []}
    for pair in range(1, args.pairs + 1):
        order = ("xbench", "bare") if pair % 2 else ("bare", "xbench")
        got = {}
        for kind in order:
            got[kind] = measure(kind, args)
            r = got[kind]
            print(f"{pair:>4} {kind:>6} {r['wall_s']:7.1f} {r['train_samples_per_s']:10.1f} "
                  f"{r['maxrss_mb']:12.0f} {r['acc_target']:6.3f}", flush=True)
        a, b = got["xbench"], got["bare"]
        ratios["wall"].append(a["wall_s"] / b["wall_s"])
        ratios["rate"].append(a["train_samples_per_s"] / b["train_samples_per_s"])
        ratios["mem"].append(a["maxrss_mb"] / b["maxrss_mb"])
    for name, label, target in (("wall", "wall ratio xbench/bare", 1.03),
                                ("rate", "step-rate ratio xbench/bare", None),
                                ("mem", "peak-RSS ratio xbench/bare", 1.1)):
        values = ratios[name]
        verdict = "" if target is None else \
            (f"  (target <= {target}: {'met' if statistics.median(values) <= target else 'MISSED'})")
        print(f"{label:>28}: median {statistics.median(values):.3f}  range "
              f"{min(values):.3f}-{max(values):.3f}{verdict}")
    return 0


def platform() -> str:
    import platform as p

    return f"torch {torch.__version__}, python {p.python_version()}, {os.cpu_count()} cpus"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
