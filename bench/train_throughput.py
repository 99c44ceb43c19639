"""Training throughput on whatever device is present: a supernet's sandwich step against its largest subnet alone.

For each scale (``--scales``: ``224`` is full width at 224 px, ImageNet's 1000 classes; ``proxy`` is the search's
proxy scale, width x0.125 at 32 px, 10 classes) it plans the supernet of ``--space``, prints its parameters and
refuses (one line, then the next scale) one whose training state cannot fit the device. Otherwise, on one
synthetic batch kept on the device (so no data wait), it times:

* a sandwich step (largest, smallest and ``--num-random`` random subnets, default two, forward and backward
  each, one AdamW step), the supernet's training step;
* a step of the largest subnet trained alone (extracted, as ``nas train`` would build it);
* with ``--alone-sum``, a step of each of the sandwich's subnets trained alone, summed: what the same
  passes cost without weight sharing.

It prints images/s of each (images of the batch per second of step; the sandwich trains all its subnets on the
same images), their ratios (sandwich step time over the largest subnet's, and over the sum), and peak device memory on
CUDA (peak resident memory of the process on the CPU). With ``--data FOLDER`` (an image folder, streamed) it also
trains the largest subnet on it at the proxy scale and prints the share of step time spent waiting for data.

The default space is ``convnext``: at full width, ``metaformer``'s supernet (every mixer kind at every
position) has billions of parameters, takes minutes to plan, and its weights, gradients and AdamW state alone
fill most of an 80 GB GPU before any activation (bench/README.md has the figures).

Usage::

    python bench/train_throughput.py                          # convnext, both scales, auto device
    python bench/train_throughput.py --device cuda --amp bf16 --batch 128 --alone-sum
    python bench/train_throughput.py --scales proxy --data /data/imagenet --steps 50
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from nas.data import load_dataset, loaders
from nas.supernet import ProxyScale, Supernet
from nas.supernet.device import DeviceError, Placement
from nas.supernet.jobs import SupernetJob

SCALES = {"224": ProxyScale(width=1.0, resolution=224, num_classes=1000),
          "proxy": ProxyScale(width=0.125, resolution=32, num_classes=10)}


def _peak_memory_mib(placement: Placement) -> float:
    if placement.on_cuda:
        return torch.cuda.max_memory_allocated(placement.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _sync(placement: Placement) -> None:
    if placement.on_cuda:
        torch.cuda.synchronize(placement.device)


def _timed_steps(step, placement: Placement, steps: int) -> float:  # noqa: ANN001 - a zero-argument callable
    """Median seconds of ``steps`` calls of ``step`` after two warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        _sync(placement)
        began = time.perf_counter()
        step()
        _sync(placement)
        times.append(time.perf_counter() - began)
    return float(np.median(times))


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, placement: Placement,
                images: torch.Tensor, labels: torch.Tensor, forwards: list) -> None:  # noqa: ANN001
    optimizer.zero_grad(set_to_none=True)
    for forward in forwards:
        with placement.autocast():
            loss = F.cross_entropy(forward(images).float(), labels) / len(forwards)
        loss.backward()
    optimizer.step()


def measure_scale(name: str, args: argparse.Namespace, placement: Placement) -> None:
    scale = SCALES[name]
    batch = args.batch or (64 if placement.on_cuda else 8) * (4 if name == "proxy" else 1)
    spec = Supernet.plan(args.space, scale=scale, scan=args.scan, seed=0)
    print(f"{name:>5}: supernet of {args.space!r}, {spec.parameters / 1e6:,.1f}M parameters")
    try:
        placement.check_training_fits(spec.parameters, f"the supernet of {args.space!r} at the {name} scale",
                                      "pass another --space")
    except DeviceError as exc:
        print(f"       skipped: {exc}")
        return
    supernet = placement.place(Supernet(spec))
    job = SupernetJob(supernet, num_random=args.num_random, seed=0)
    images = torch.randn(batch, job.channels, job.resolution, job.resolution, device=placement.device)
    labels = torch.randint(0, scale.num_classes, (batch,), device=placement.device)
    subnets = job.subnets(0, 0)
    optimizer = torch.optim.AdamW(supernet.parameters(), lr=1e-4)
    forwards = [lambda x, arch=arch: supernet(x, arch) for arch in subnets]
    sandwich = _timed_steps(lambda: _train_step(supernet, optimizer, placement, images, labels, forwards),
                            placement, args.steps)
    largest = placement.place(supernet.extract(supernet.largest))
    print(f"       batch {batch} at {job.resolution} px, {len(subnets)} subnets per sandwich step; largest subnet "
          f"{supernet.num_parameters(supernet.largest) / 1e6:,.1f}M parameters")
    alone = _alone_step(largest, placement, images, labels, args.steps)
    print(f"       sandwich step {sandwich * 1e3:8.1f} ms, {batch / sandwich:8.1f} images/s")
    print(f"       largest alone {alone * 1e3:8.1f} ms, {batch / alone:8.1f} images/s")
    kind = "CUDA allocated" if placement.on_cuda else "process resident"
    print(f"       ratio (sandwich / largest alone) {sandwich / alone:.2f}; peak memory "
          f"{_peak_memory_mib(placement):.0f} MiB ({kind})")
    if args.alone_sum:
        summed = sum(_alone_step(placement.place(supernet.extract(arch)), placement, images, labels, args.steps)
                     for arch in subnets)
        print(f"       its {len(subnets)} subnets alone, summed {summed * 1e3:8.1f} ms; ratio (sandwich / sum) "
              f"{sandwich / summed:.2f}")


def _alone_step(model: torch.nn.Module, placement: Placement, images: torch.Tensor, labels: torch.Tensor,
                steps: int) -> float:
    """Median seconds of a training step of ``model`` on its own (its own AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return _timed_steps(lambda: _train_step(model, optimizer, placement, images, labels, [model]), placement, steps)


def measure_data_wait(args: argparse.Namespace, placement: Placement) -> None:
    scale = SCALES["proxy"]
    data = load_dataset(args.data, stream=True)
    supernet = Supernet.create(args.space, scale=ProxyScale(width=scale.width, resolution=scale.resolution,
                                                            num_classes=data.num_classes), scan=args.scan, seed=0)
    model = placement.place(supernet.extract(supernet.largest))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train, _ = loaders(data, batch_size=args.batch or 64, resolution=scale.resolution, augment=True)
    waited = stepped = 0.0
    batches = train.iter_epoch(0)
    for _ in range(min(args.steps + 2, len(train))):
        began = time.perf_counter()
        images, labels = placement.batch(*next(batches))
        _sync(placement)
        ready = time.perf_counter()
        _train_step(model, optimizer, placement, images, labels, [model])
        _sync(placement)
        waited, stepped = waited + ready - began, stepped + time.perf_counter() - began
    print(f"data wait, streamed {args.data} ({data.num_train} images, {train.workers} workers): "
          f"{100 * waited / stepped:.1f}% of step time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="convnext", help="a space name or file (default convnext)")
    parser.add_argument("--scales", nargs="+", choices=sorted(SCALES), default=["proxy", "224"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off")
    parser.add_argument("--batch", type=int, help="images per step (default 64 on CUDA, 8 on the CPU; x4 at proxy)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median; default 5)")
    parser.add_argument("--scan", type=int, default=200, help="points that size the supernet (default 200)")
    parser.add_argument("--data", help="an image folder to stream for the data-wait figure")
    parser.add_argument("--num-random", type=int, default=2,
                        help="random subnets per sandwich step besides the ends (default 2, as nas supernet train)")
    parser.add_argument("--alone-sum", action="store_true",
                        help="also time each of the sandwich's subnets alone, and print the sandwich over their sum")
    args = parser.parse_args()
    placement = Placement.parse(args.device, args.amp)
    name = (torch.cuda.get_device_name(placement.device) if placement.on_cuda else
            f"CPU ({torch.get_num_threads()} threads)")
    print(f"device: {name}; amp {args.amp}; space {args.space}")
    for scale in args.scales:
        measure_scale(scale, args, placement)
    if args.data:
        measure_data_wait(args, placement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
