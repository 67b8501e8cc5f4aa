"""GPU readiness: ERM with ResNet-18 on 64-px shapes, fp32 vs bf16, harness vs pure compute,
and Ray packing several small jobs on one GPU vs one at a time. Prepared for a GPU machine
(about 5-8 minutes on one H100/H200-class GPU); ``--smoke`` checks it runs on the CPU.

    python benchmarks/gpu.py                 # on a machine with a CUDA GPU
    python benchmarks/gpu.py --smoke         # tiny budgets on the CPU (about 2 min on 2 cores)

1. **Step rate, fp32 vs bf16** (and fp16 when the GPU has no bf16): one job of
   ``erm_resnet18`` (a benchmark plugin: torchvision's ResNet-18 from scratch, Adam
   1e-3) on ``shapes_styles`` at 64 px, ``--steps`` steps of 3 x ``--batch``
   samples, run by the runner (``run_job``) in each precision; its training
   samples/s (device-synchronised clocks, warm-up excluded), peak CUDA memory and
   target accuracy.
2. **Harness vs pure compute**: the same network, optimizer and batch shape in a
   bare loop over one device-resident random batch (no sampling, no evaluation),
   timed the same way; the ratio runner / pure says what the harness's data path
   costs on a GPU.
3. **Ray packing**: ``--pack`` small jobs (digits, 16 px) through ``xbench run
   --executor ray`` with ``--gpus-per-job 1`` (one at a time on one GPU) and with
   ``--gpus-per-job 1/pack`` (all packed on it); wall time of each and the ratio.

Prints one table per part; paste them into ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
METHOD = "erm_resnet18"


def resnet18(classes: int) -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=classes)


def register_plugin() -> None:
    from xbench import Method, register_method

    @register_method(METHOD, tags={"dg"})
    class ERMResNet18(Method):
        """ERM with torchvision's ResNet-18 (benchmark plugin)."""

        protocols = ("dg",)

        def __init__(self, *, lr: float = 1e-3):
            self.lr = lr

        def setup(self, info, device):
            self.net = resnet18(info.num_classes).to(device)
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


def job(args: argparse.Namespace, precision: str):
    from xbench.harness.plan import Job
    from xbench.registry import load_task

    task = load_task("shapes_styles", resolution=args.resolution, n_per_class=args.per_class)
    budget = {"steps": args.steps, "batch_size": args.batch, "eval_every": args.steps,
              "eval_batch_size": 256}
    return Job(suite="gpu", task="shapes_styles", task_version=str(task.version),
               task_options=task.options(), target=task.default_target, protocol="dg",
               method=METHOD, hparams={"lr": 1e-3}, seed=0, budget=budget,
               precision=precision)


def pure_loop(args: argparse.Namespace, device: torch.device, precision: str) -> float:
    """Samples/s of fwd+bwd+Adam on one resident batch (3 domains x batch), synchronised."""
    from xbench.harness.precision import autocast
    from xbench.harness.timing import clock

    torch.manual_seed(0)
    net = resnet18(7).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = 3 * args.batch
    x = torch.rand(n, 3, args.resolution, args.resolution, device=device)
    y = torch.randint(0, 7, (n,), device=device)
    warmup, timed = min(10, args.steps // 5), 0.0
    for i in range(args.steps):
        start = clock(device)
        with autocast(precision, device):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if i >= warmup:
            timed += clock(device) - start
    return n * (args.steps - warmup) / timed


def part_precision(args: argparse.Namespace, device: torch.device) -> None:
    from xbench.harness.runner import run_job

    precisions = ["fp32", "bf16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        precisions = ["fp32", "fp16"]
    print(f"\n## 1-2. ERM ResNet-18, shapes_styles {args.resolution} px, {args.steps} steps x 3 x "
          f"{args.batch}, {device}\n")
    print("| precision | runner samples/s | pure loop samples/s | runner / pure | peak MiB "
          "| acc_target | wall s |\n|---|---|---|---|---|---|---|")
    base = None
    for precision in precisions:
        record = run_job(job(args, precision), device)
        if record["status"] != "ok":
            print(f"| {precision} | FAILED: {record['error']} |")
            continue
        cost = record["cost"]
        pure = pure_loop(args, device, precision)
        rate = cost["train_samples_per_s"]
        base = base or rate
        print(f"| {precision} | {rate:.0f} ({rate / base:.2f}x) | {pure:.0f} | "
              f"{rate / pure:.2f} | {cost['peak_mem_mb']:.0f} ({cost['peak_mem_kind']}) | "
              f"{record['metrics']['acc_target']:.3f} | {cost['wall_s']:.1f} |", flush=True)


PACK_SUITE = """
name = "gpu-pack"
seeds = [{seeds}]
methods = ["erm"]
[budget]
steps = {steps}
batch_size = 32
eval_every = {steps}
[[tasks]]
name = "digits_rotated"
targets = ["75"]
"""


def part_pack(args: argparse.Namespace, device: torch.device) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        print("\n## 3. Ray packing: skipped (pip install 'xbench[ray]')")
        return
    seeds = ", ".join(str(s) for s in range(args.pack))
    gpus = device.type == "cuda"
    print(f"\n## 3. Ray: {args.pack} ERM jobs (digits 16 px, {args.pack_steps} steps) on one "
          f"{'GPU' if gpus else 'CPU (smoke: no GPU, so nothing is packed)'}\n")
    print("| placement | wall s | vs one at a time |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "pack.toml"
        suite.write_text(PACK_SUITE.format(seeds=seeds, steps=args.pack_steps))
        walls = {}
        for label, per_job in (("one at a time", 1.0), (f"{args.pack} packed",
                                                         1.0 / args.pack)):
            command = [sys.executable, "-m", "xbench.cli", "run", str(suite), "--out",
                       str(Path(tmp) / label.replace(" ", "_")), "--executor", "ray", "--jobs",
                       str(args.pack), "--quiet", "--device", device.type]
            command += ["--gpus-per-job", f"{per_job if gpus else 0}", "--cpus-per-job", "1"]
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            walls[label] = time.perf_counter() - start
            if proc.returncode != 0:
                print(f"| {label} | FAILED ({proc.returncode}): {proc.stderr[-500:]} | |")
                continue
            first = walls[next(iter(walls))]
            print(f"| {label} | {walls[label]:.1f} | {first / walls[label]:.2f}x |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny budgets on the CPU")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128, help="per source domain (3)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=200, help="shapes per class and domain")
    parser.add_argument("--pack", type=int, default=4)
    parser.add_argument("--pack-steps", type=int, default=300)
    parser.add_argument("--parts", default="precision,pack")
    args = parser.parse_args(argv)
    if args.smoke:
        device = torch.device("cpu")
        args.steps, args.batch, args.resolution, args.pack, args.pack_steps = 12, 4, 32, 2, 10
        args.per_class = 10
    elif not torch.cuda.is_available():
        print("no CUDA device here; run with --smoke to check the script on the CPU",
              file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    register_plugin()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# benchmarks/gpu.py{' --smoke' if args.smoke else ''}: {name}, torch "
          f"{torch.__version__}")
    start = time.perf_counter()
    if "precision" in args.parts:
        part_precision(args, device)
    if "pack" in args.parts:
        part_pack(args, device)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
