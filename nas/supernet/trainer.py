"""Training: the supernet with the sandwich rule, or one architecture stand-alone, with the same loop.

Per step the trainer takes one batch and a list of subnets from its
:class:`Job`: for the supernet (:class:`SupernetJob`) the sandwich rule of
BigNAS (arXiv:2003.11142) - the largest subnet, the smallest, and
``num_random`` random ones - for a plain model (:class:`ModelJob`) the model
itself. Each subnet runs forward and backward in turn, gradients accumulate,
and one optimizer step follows. With in-place distillation the largest subnet
learns from the labels and every other one from the largest's soft
predictions (detached). Each loss is divided by the number of subnets, so one
learning rate serves both jobs.

* Optimiser: AdamW, weight decay on tensors of rank >= 2 only; learning rate
  warmed up linearly, then a cosine to ``min_lr_ratio`` of it.
* Options: SAM (Foret et al., arXiv:2010.01412; "When Vision Transformers
  Outperform ResNets without Pretraining or Strong Data Augmentations",
  arXiv:2106.01548) - a second forward/backward of the whole sandwich at
  weights moved by ``rho`` along the normalised gradient; sigmaReparam
  (:mod:`nas.supernet.sigma`).
* Randomness: the random subnets of step ``s`` of epoch ``e`` are drawn from
  ``numpy.random.default_rng([seed, e, s, k])``; batches and augmentation are
  seeded by ``(seed, epoch, batch)`` in :mod:`nas.data`. Nothing reads a
  global generator, so every DDP rank samples the same subnets and a resumed
  run repeats an uninterrupted one exactly.
* Checkpoints (:mod:`nas.supernet.checkpoint`) every
  :attr:`TrainOptions.checkpoint_every` steps and at the end, atomically;
  ``resume`` continues from the last one with the same loss trajectory. A
  run refuses to resume under other settings, naming the file and the
  fields that differ.
* Scale-out: under ``torchrun`` (``WORLD_SIZE > 1``) the module is wrapped in
  DistributedDataParallel (gloo on CPU, NCCL on GPU) with
  ``find_unused_parameters`` (each subnet uses a subset of the shared
  tensors); every subnet's backward all-reduces, which keeps gradient
  accumulation over subnets exact. Each rank reads its shard of every batch;
  buffers (BatchNorm statistics) come from rank 0 at each forward and once
  more at the end; rank 0 writes the checkpoints and shows the progress bar.

Run directory (``out``)::

    checkpoint.pt   the latest checkpoint (resume from it); it records the precision the blocks train at
                    (fake quantisation: ``nas train --precision``), and a resume under another is refused
    result.json     written when training completes: settings, precision, metrics, throughput, and for a model
                    with MoE layers its load-balancing ``auxiliary_loss`` (the history's
                    ``auxiliary_losses`` per step and subnet, added to the task loss)
    model.pt        stand-alone runs: {"format": "nas-model", "arch", "state_dict", ...} for export
    arch.yaml       stand-alone runs: the trained (proxied) architecture

Nothing is written before the first checkpoint, so a run that fails while
starting leaves no directory behind.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nas.arch import Arch
from nas.atomic import write_atomic
from nas.blocks.common import set_training_progress
from nas.blocks.ofq import QatOptions
from nas.data import Augment, Dataset, PatchMixing, loaders
from nas.errors import NasError, NasWarning
from nas.supernet.checkpoint import CHECKPOINT, CheckpointError, check_matches, load_checkpoint, save_checkpoint
from nas.supernet.device import DeviceError, Placement
from nas.supernet.elastic import SHARING_VERSION
from nas.supernet.evaluate import EvalBatches
from nas.supernet.jobs import Job, ModelJob, SupernetJob
from nas.supernet.proxy import ProxyScale
from nas.supernet.supernet import Supernet, SupernetSpec
from nas.supernet.train_settings import TrainResult, TrainSettings
from nas.yamlio import dump_json

__all__ = ["CHECKPOINT", "RESULT", "MODEL", "TrainOptions", "Trainer", "train_supernet", "train_model"]

RESULT = "result.json"
MODEL = "model.pt"
_LAST_STEPS = 20  # steps whose auxiliary loss result.json averages


# ---------------------------------------------------------------------------
# the options


@dataclass(frozen=True)
class TrainOptions:
    """How a run is carried out, as opposed to what it computes (:class:`TrainSettings`).

    These are apart from the settings because they do not change the loss
    trajectory or the trained weights: a run stopped at ``max_steps`` and
    resumed, checkpointed at other steps, with or without a progress bar,
    ends with the weights of an uninterrupted run. So they are not recorded
    in the checkpoint nor checked on resume, and a resumed run may choose
    them anew.
    ``evaluate`` and ``eval_calibration`` shape only the final evaluation.

    Attributes:
        checkpoint_every: steps between checkpoints.
        max_steps: stop after this many steps in total (a checkpoint is written); None: train to the end.
        progress: show a tqdm bar (rank 0).
        log: receives log lines (rank 0); default: ``tqdm.write`` when the bar is shown, else nothing.
        eval_calibration: training batches for BatchNorm recalibration in the final evaluation.
        evaluate: evaluate on the validation split when training completes.
        placement: the device and autocast precision (:class:`~nas.supernet.device.Placement`). The device
            may change on resume (checkpoints load on any device); the precision may not, since it
            changes the numbers: the checkpoint records it and a resume under another one is refused.
        compile: run a stand-alone model through ``torch.compile``; where a kind does not compile, the
            first step falls back to eager with a warning. A supernet changes its graph every step and is
            never compiled (a warning says so).
    """

    checkpoint_every: int = 100
    max_steps: int | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None
    eval_calibration: int = 8
    evaluate: bool = True
    placement: Placement = Placement()
    compile: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise NasError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.max_steps is not None and self.max_steps < 0:
            raise NasError(f"max_steps must be >= 0, got {self.max_steps}")


# ---------------------------------------------------------------------------
# the loop


def _distributed(placement: Placement) -> tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; joins the torchrun process group when WORLD_SIZE > 1.

    NCCL when the model trains on CUDA, gloo otherwise: the backend follows where the tensors are, not
    whether the machine has a GPU.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if placement.on_cuda:
            torch.cuda.set_device(placement.device)
        dist.init_process_group("nccl" if placement.on_cuda else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _schedule(settings: TrainSettings, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = round(settings.warmup_epochs * steps_per_epoch)
    total = settings.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _soft_cross_entropy(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return -(teacher * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class Trainer:
    """Runs a :class:`Job` on a dataset under :class:`TrainSettings` (see the module docstring).

    Args:
        job: what to train.
        dataset: from :func:`nas.data.load_dataset`.
        settings: the trajectory-defining settings.
        data_spec: how the dataset was named (recorded; a resumed run must use the same).
        out: run directory; None writes nothing (no checkpoints, no resume).
        checkpoint: a loaded checkpoint to resume from (see :func:`train_supernet`).
        options: checkpoints, early stop, progress, log and final evaluation (:class:`TrainOptions`).
    """

    def __init__(self, job: Job, dataset: Dataset, settings: TrainSettings, *, data_spec: str | None = None,
                 out: str | os.PathLike[str] | None = None, checkpoint: dict[str, Any] | None = None,
                 options: TrainOptions = TrainOptions()):
        self.job = job
        self.dataset = dataset
        self.settings = settings
        self.data_spec = data_spec or dataset.name
        self.out = None if out is None else Path(out)
        self.checkpoint = checkpoint
        self.options = options
        if checkpoint is None and self.out is not None and (self.out / CHECKPOINT).exists():
            raise NasError(f"{self.out}: already holds a run ({CHECKPOINT}); resume it or choose another --out")
        self.placement = options.placement.for_this_process()
        if settings.sam and self.placement.amp == "fp16":
            raise DeviceError("--sam with --amp fp16 is not supported (the second pass would need its own loss "
                              "scaling); use --amp bf16")
        self.scaler = self.placement.scaler()

    # -- setup --------------------------------------------------------------------------------

    def _optimizer(self, module: nn.Module) -> torch.optim.Optimizer:
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
        other = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.settings.weight_decay},
                  {"params": other, "weight_decay": 0.0}]
        return torch.optim.AdamW([group for group in groups if group["params"]], lr=self.settings.lr)

    def _restore(self, module: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[dict[str, Any]]]:
        data = self.checkpoint
        assert data is not None
        path = self.out / CHECKPOINT if self.out is not None else Path("<checkpoint>")
        if data["kind"] != self.job.kind:
            raise CheckpointError(f"{path}: a {data['kind']} checkpoint, this run trains a {self.job.kind}")
        check_matches(path, data["settings"], self.settings.to_dict(), "train settings")
        check_matches(path, {"data": data["data"]}, {"data": self.data_spec}, "data")
        check_matches(path, {"precision": data.get("precision", "fp32")}, {"precision": self.job.precision},
                      "quantisation settings")
        check_matches(path, data["job"], self.job.describe(), "job")
        check_matches(path, {"amp": data.get("amp", "off")}, {"amp": self.placement.amp}, "mixed-precision settings")
        try:
            module.load_state_dict(data["model"])
            optimizer.load_state_dict(data["optimizer"])
            scheduler.load_state_dict(data["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path}: does not fit this run's model or optimizer: {reason}") from None
        if not isinstance(data["rng"].get("torch"), torch.Tensor):
            raise CheckpointError(f"{path}: malformed random-generator state")
        if self.scaler is not None and "scaler" in data:
            self.scaler.load_state_dict(data["scaler"])
        return int(data["step"]), list(data["history"])

    # -- one step ---------------------------------------------------------------------------------

    def _sandwich(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                  subnets: list[Arch | None]) -> tuple[list[float], list[float] | None]:
        """Forward and backward of each subnet; its task losses, and its auxiliary losses (None if no subnet had
        any): an MoE subnet's load-balancing loss is added to its task loss."""
        settings = self.settings
        teacher: torch.Tensor | None = None
        losses = []
        extras: list[float | None] = []
        for index, subnet in enumerate(subnets):
            with self.placement.autocast():
                logits = self.job.forward(model, images, subnet).float()
            if teacher is None:
                loss = F.cross_entropy(logits, targets, label_smoothing=settings.label_smoothing)
                if settings.distill and index == 0 and len(subnets) > 1 and bool(torch.isfinite(logits).all()):
                    teacher = F.softmax(logits.detach(), dim=-1)
            else:
                loss = _soft_cross_entropy(logits, teacher)
            losses.append(float(loss.detach()))
            extra = self.job.auxiliary_loss()
            extras.append(None if extra is None else float(extra.detach()))
            total = loss if extra is None else loss + extra
            if math.isfinite(float(total.detach())):  # a subnet that overflows is left out of this step, not the run
                share = total / len(subnets)
                (share if self.scaler is None else self.scaler.scale(share)).backward()
        if all(extra is None for extra in extras):
            return losses, None
        return losses, [0.0 if extra is None else extra for extra in extras]

    def _step(self, model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
              targets: torch.Tensor, subnets: list[Arch | None]) -> tuple[list[float], list[float] | None]:
        optimizer.zero_grad(set_to_none=True)
        losses, extras = self._sandwich(model, images, targets, subnets)
        if self.settings.sam:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            norm = torch.norm(torch.stack([p.grad.norm(2) for p in params]), 2)
            scale = self.settings.sam_rho / (norm + 1e-12)
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad * scale)
            optimizer.zero_grad(set_to_none=True)
            self._sandwich(model, images, targets, subnets)  # its losses are the perturbed weights': not recorded
            with torch.no_grad():
                for p, value in zip(params, saved, strict=True):
                    p.copy_(value)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        limit = self.settings.grad_clip if self.settings.grad_clip is not None else math.inf
        if not math.isfinite(float(torch.nn.utils.clip_grad_norm_(params, limit))):
            optimizer.zero_grad(set_to_none=True)  # a non-finite gradient would turn every shared weight into NaN
        if self.scaler is None:
            optimizer.step()
        else:  # skips the step and lowers the scale when the gradients overflowed float16
            self.scaler.step(optimizer)
            self.scaler.update()
        return losses, extras

    # -- the run ------------------------------------------------------------------------------------

    def _save(self, rank: int, step: int, module: nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, history: list[dict[str, Any]]) -> None:
        if self.out is None or rank != 0:
            return
        save_checkpoint(self.out / CHECKPOINT, {
            "kind": self.job.kind, "job": self.job.describe(), "settings": self.settings.to_dict(),
            "data": self.data_spec, "step": step, "model": module.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": self._rng_state(), "history": history,
            "amp": self.placement.amp, "precision": self.job.precision,
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})})

    def _compiled(self, model: nn.Module) -> nn.Module:
        """``torch.compile(model)`` for a stand-alone model; a supernet stays eager (see :class:`TrainOptions`)."""
        if not isinstance(self.job, ModelJob):
            warnings.warn("--compile: a supernet runs another subnet every step, which would recompile every step; "
                          "training it eagerly", NasWarning, stacklevel=3)
            return model
        return torch.compile(model)

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state()}
        if self.placement.on_cuda:  # drop path on the GPU draws from the device's generator
            state["cuda"] = torch.cuda.get_rng_state(self.placement.device)
        return state

    def _set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch"])
        if self.placement.on_cuda and isinstance(state.get("cuda"), torch.Tensor):
            torch.cuda.set_rng_state(state["cuda"], self.placement.device)

    def run(self) -> TrainResult:
        """Train (or resume) to the end or to ``max_steps``; see the module docstring."""
        from tqdm import tqdm

        settings, options = self.settings, self.options
        rank, world, owned = _distributed(self.placement)
        try:
            policy: bool | Augment = False
            if settings.augment:
                randaugment = (settings.randaugment_ops, settings.randaugment_magnitude)
                policy = Augment(patch_mixing=PatchMixing() if settings.patch_mixing else None, mixup=settings.mixup,
                                 cutmix=settings.cutmix, randaugment=randaugment if randaugment[0] else None)
            train, _ = loaders(self.dataset, batch_size=settings.batch_size, resolution=self.job.resolution,
                               channels=self.job.channels, augment=policy, seed=settings.seed, rank=rank,
                               world_size=world)
            steps_per_epoch = len(train)
            total = settings.epochs * steps_per_epoch
            module = self.placement.place(self.job.module)
            optimizer = self._optimizer(module)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings, steps_per_epoch))
            start, history = 0, list[dict[str, Any]]()
            if self.checkpoint is not None:
                start, history = self._restore(module, optimizer, scheduler)
            model: nn.Module = module
            if world > 1:
                model = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
            eager = model
            if options.compile:
                model = self._compiled(model)
            stop = total if options.max_steps is None else min(total, options.max_steps)
            show = options.progress and rank == 0
            log = options.log or (tqdm.write if show else None)
            bar = tqdm(total=total, initial=start, disable=not show, unit="step", dynamic_ncols=True,
                       desc=f"train {self.job.kind}")
            module.train()
            began, done = time.perf_counter(), 0
            step = start
            batches = None
            # the caller's generators are left as they were
            rng_scope = torch.random.fork_rng(devices=self.placement.rng_devices)
            rng_scope.__enter__()
            if self.checkpoint is None:
                torch.manual_seed(settings.seed)  # only stochastic layers (drop path) read it
            else:
                self._set_rng_state(self.checkpoint["rng"])
            try:
                while step < stop:
                    epoch, index = divmod(step, steps_per_epoch)
                    if batches is None or index == 0:
                        batches = train.iter_epoch(epoch, start=index)
                    images, targets = self.placement.batch(*next(batches))
                    tick = time.perf_counter()
                    subnets = self.job.subnets(epoch, index)
                    set_training_progress(module, (step + 1) / total)  # VanillaNet: identity by the last step
                    try:
                        losses, extras = self._step(model, optimizer, images, targets, subnets)
                    except Exception as exc:  # noqa: BLE001 - any failure of the compiler, on its first step only
                        if model is eager or done > 0:
                            raise
                        warnings.warn(f"torch.compile failed on this model ({type(exc).__name__}: "
                                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                                      "training it eagerly", NasWarning, stacklevel=2)
                        model = eager
                        losses, extras = self._step(model, optimizer, images, targets, subnets)
                    lr = optimizer.param_groups[0]["lr"]
                    scheduler.step()
                    step += 1
                    done += 1
                    record = {"step": step, "epoch": epoch, "losses": losses, "lr": lr,
                              "seconds": time.perf_counter() - tick}
                    if extras is not None:
                        record["auxiliary_losses"] = extras
                    history.append(record)
                    rate = done * settings.batch_size * world / max(time.perf_counter() - began, 1e-9)
                    bar.set_postfix(loss=f"{losses[0]:.3f}", img_s=f"{rate:.0f}", refresh=False)
                    bar.update(1)
                    if step % options.checkpoint_every == 0 or step == stop:
                        self._save(rank, step, module, optimizer, scheduler, history)
                    if log is not None and index == steps_per_epoch - 1:
                        mean = np.mean([record["losses"][0] for record in history[-steps_per_epoch:]])
                        log(f"epoch {epoch + 1}/{settings.epochs}: loss {mean:.4f}, {rate:.0f} images/s")
            finally:
                rng_scope.__exit__(None, None, None)
                bar.close()
            if world > 1:  # DDP syncs buffers at each forward's start; end with rank 0's BatchNorm statistics too
                with torch.no_grad():
                    for buffer in module.buffers():
                        dist.broadcast(buffer, 0)
            seconds = time.perf_counter() - began
            result = TrainResult(steps=step, total_steps=total, history=history, seconds=seconds,
                                 images_per_second=done * settings.batch_size * world / max(seconds, 1e-9),
                                 out=self.out)
            if step >= total and rank == 0 and options.evaluate:
                batches_eval = EvalBatches.from_dataset(self.dataset, resolution=self.job.resolution,
                                                        channels=self.job.channels,
                                                        calibration_batches=options.eval_calibration,
                                                        batch_size=max(settings.batch_size, 128), seed=settings.seed)
                result.metrics = self.job.metrics(batches_eval)
                if log is not None:
                    log("validation: " + ", ".join(f"{key} {value:.4f}" for key, value in result.metrics.items()))
                self._finish(result)
            return result
        finally:
            if owned:
                dist.destroy_process_group()

    def _finish(self, result: TrainResult) -> None:
        if self.out is None:
            return
        if isinstance(self.job, ModelJob):
            exported = self.job.export()
            save_checkpoint(self.out / MODEL, {key: value for key, value in exported.items()
                                               if key not in ("format", "version")})
            write_atomic(self.out / "arch.yaml", self.job.proxied.to_yaml())
        summary = {"kind": self.job.kind, "job": self.job.describe() if self.job.kind == "model" else
                   {"space": self.job.supernet.spec.space,  # type: ignore[attr-defined]
                    "scale": self.job.supernet.scale.to_dict()},  # type: ignore[attr-defined]
                   "settings": self.settings.to_dict(), "precision": self.job.precision, "data": self.data_spec,
                   "steps": result.steps,
                   "metrics": result.metrics, "seconds": round(result.seconds, 3),
                   "images_per_second": round(result.images_per_second, 2)}
        extras = [record["auxiliary_losses"][0] for record in result.history if "auxiliary_losses" in record]
        if extras:  # MoE: the load-balancing loss of the first subnet, over the last steps
            summary["auxiliary_loss"] = round(float(np.mean(extras[-_LAST_STEPS:])), 6)
        write_atomic(self.out / RESULT, dump_json(summary))


# ---------------------------------------------------------------------------
# entry points (the CLI calls these)


def _resume_checkpoint(out: Path | None, kind: str, settings: TrainSettings, data_spec: str) -> dict[str, Any]:
    """The checkpoint to resume, checked against this run's settings before anything is built."""
    if out is None:
        raise NasError("resume needs the run directory (--out DIR) that holds the checkpoint")
    path = out / CHECKPOINT
    data = load_checkpoint(path, kind=kind)
    check_matches(path, data["settings"], settings.to_dict(), "train settings")
    check_matches(path, {"data": data["data"]}, {"data": data_spec}, "data")
    return data


def train_supernet(space: str, dataset: Dataset, settings: TrainSettings, *, width: float = 0.25,
                   resolution: int = 32, scan: int = 1000, data_spec: str | None = None,
                   out: str | os.PathLike[str] | None = None, resume: bool = False,
                   options: TrainOptions = TrainOptions()) -> TrainResult:
    """Train a supernet over ``space`` on ``dataset`` at the proxy scale ``(width, resolution)``.

    Args:
        space: a space name or file (:func:`nas.space.load_space`).
        dataset: the data (its class count sets the heads).
        settings: trajectory settings.
        width, resolution: the proxy scale.
        scan: sampled points that size the shared tensors.
        data_spec: the dataset's name as given (recorded in checkpoints).
        out: run directory.
        resume: continue from ``out/checkpoint.pt``; the supernet's tensors come from the checkpoint.
        options: how the run is carried out (:class:`TrainOptions`); its ``log`` also receives the lines of
            sizing the shared tensors.

    Example:
        >>> from nas.data import load_dataset
        >>> result = train_supernet("convnext", load_dataset(None), TrainSettings(epochs=1),
        ...                         out="runs/supernet-convnext")  # doctest: +SKIP
    """
    out_path = None if out is None else Path(out)
    scale = ProxyScale(width=width, resolution=resolution, num_classes=dataset.num_classes)
    data_spec = data_spec or dataset.name
    checkpoint = _resume_checkpoint(out_path, "supernet", settings, data_spec) if resume else None
    if checkpoint is not None:
        path = out_path / CHECKPOINT  # type: ignore[operator]
        try:
            spec = SupernetSpec.from_dict(checkpoint["job"]["spec"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: malformed supernet description ({exc})") from None
        wanted = {"space": space, "scale": scale.to_dict(), "seed": settings.seed, "scan": scan,
                  "sigma_reparam": settings.sigma_reparam, "sharing": SHARING_VERSION}
        check_matches(path, spec.settings(), wanted, "supernet settings")
    else:
        spec = Supernet.plan(space, scale=scale, seed=settings.seed, scan=scan,
                             sigma_reparam=settings.sigma_reparam, progress=options.log)
    options.placement.for_this_process().check_training_fits(
        spec.parameters, f"the supernet of {space!r} at width {width}",
        "lower --proxy-width (memory grows with its square), or train a space with fewer kinds")
    supernet = Supernet(spec)
    job = SupernetJob(supernet, num_random=settings.num_random, seed=settings.seed, ends=settings.ends)
    return Trainer(job, dataset, settings, data_spec=data_spec, out=out_path, checkpoint=checkpoint,
                   options=options).run()


def train_model(arch: Arch, dataset: Dataset, settings: TrainSettings, *, width: float = 0.25,
                resolution: int | None = 32, data_spec: str | None = None, out: str | os.PathLike[str] | None = None,
                resume: bool = False, options: TrainOptions = TrainOptions(),
                init: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train ``arch`` alone at the proxy scale ``(width, resolution)`` (``width=1, resolution=None``: full scale).

    The head is resized to the dataset's classes. At the default scale the
    model is exactly the supernet's subnet for ``arch`` (same proxy), so the
    accuracies are comparable. ``init`` starts from a trained model's weights
    (:func:`~nas.supernet.jobs.initial_weights`): quantisation-aware training
    of a model trained in float32, whose checkpoint has no quantiser state.
    """
    out_path = None if out is None else Path(out)
    scale = ProxyScale(width=width, resolution=resolution, num_classes=dataset.num_classes)
    data_spec = data_spec or dataset.name
    checkpoint = _resume_checkpoint(out_path, "model", settings, data_spec) if resume else None
    job = ModelJob(arch, scale, seed=settings.seed, sigma_reparam=settings.sigma_reparam,
                   qat=QatOptions(statsq=settings.statsq, cga=settings.cga, cga_boundary=settings.cga_boundary),
                   init=None if init is None else str(init))
    return Trainer(job, dataset, settings, data_spec=data_spec, out=out_path, checkpoint=checkpoint,
                   options=options).run()
