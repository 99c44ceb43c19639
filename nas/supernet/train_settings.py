"""What fixes a training run's loss trajectory (:class:`TrainSettings`), and what a run did (:class:`TrainResult`).

A resumed run must use the same settings: :mod:`nas.supernet.trainer` compares them with the checkpoint's.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from nas.arch import coerce_field
from nas.errors import ConfigError

__all__ = ["TrainSettings", "TrainResult"]

_SETTINGS_SOURCE = "train settings"  # where a TrainSettings error says the bad value is
_ADDED_LATER = {"mixup": 0.0, "cutmix": 0.0, "randaugment_ops": 0, "randaugment_magnitude": 9, "statsq": False,
                "cga": 0.0, "cga_boundary": 0.005}


@dataclass(frozen=True)
class TrainSettings:
    """Everything that fixes the loss trajectory of a run (a resumed run must use the same).

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step and rank.
        lr: peak learning rate of AdamW.
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        weight_decay: AdamW's decoupled weight decay (tensors of rank >= 2).
        warmup_epochs: linear warm-up length.
        label_smoothing: of the cross-entropy on labels.
        num_random: random subnets per step besides the largest and smallest (supernet only).
        ends: the sandwich ends (supernet only): ``fixed`` uses the same two points every step; ``varied`` draws
            each step's largest and smallest with every size decision at its extreme and every kind decision at
            random (:meth:`Supernet.sample_end`). Not the default: ``varied`` lifts random subnets' one-shot accuracy
            a little but costs the ends far more (some extreme points overflow); ``bench/supernet_rank.py
            --ends varied`` measures it.
        distill: in-place distillation from the largest subnet (supernet only).
        sam: sharpness-aware minimisation.
        sam_rho: SAM's neighbourhood radius.
        sigma_reparam: sigmaReparam on linear weights.
        grad_clip: clip the global gradient norm to this (None: no clipping).
        augment: random crop and flip.
        patch_mixing: Patch Mixing on top of ``augment``.
        mixup, cutmix: Beta parameters of mixup and CutMix on top of ``augment`` (0: off; see
            :class:`nas.data.Augment`).
        randaugment_ops, randaugment_magnitude: RandAugment per image on top of ``augment`` (0 ops: off).
        statsq, cga, cga_boundary: OFQ's remedies for quantisation-aware training of integer weights (stand-alone
            models only; :class:`nas.blocks.ofq.QatOptions`): weight ranges from the weights' statistics, and
            confidence-guided annealing over the last ``cga`` of training with its boundary width.
        seed: data order, augmentation, subnet sampling, and a stand-alone model's initial weights.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    num_random: int = 2
    ends: Literal["fixed", "varied"] = "fixed"
    distill: bool = True
    sam: bool = False
    sam_rho: float = 0.05
    sigma_reparam: bool = False
    grad_clip: float | None = 5.0
    augment: bool = True
    patch_mixing: bool = False
    mixup: float = 0.0
    cutmix: float = 0.0
    randaugment_ops: int = 0
    randaugment_magnitude: int = 9
    statsq: bool = False
    cga: float = 0.0
    cga_boundary: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        """Check each field's type (:func:`nas.arch.coerce_field`, ints become floats where a float is due), then
        its range; an error names the field, as in ``train settings: lr: must be > 0, got -1.0``."""
        hints = typing.get_type_hints(TrainSettings)
        for item in fields(self):
            try:
                object.__setattr__(self, item.name, coerce_field(getattr(self, item.name), hints[item.name],
                                                                 item.name))
            except ConfigError as error:
                raise error.located(source=_SETTINGS_SOURCE) from None
        rules = [("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                 ("lr", self.lr > 0, "> 0"), ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
                 ("weight_decay", self.weight_decay >= 0, ">= 0"), ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
                 ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
                 ("num_random", self.num_random >= 0, ">= 0"), ("sam_rho", self.sam_rho > 0, "> 0"),
                 ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "> 0 or None"),
                 ("mixup", self.mixup >= 0, ">= 0"), ("cutmix", self.cutmix >= 0, ">= 0"),
                 ("randaugment_ops", self.randaugment_ops >= 0, ">= 0"),
                 ("randaugment_magnitude", 0 <= self.randaugment_magnitude <= 30, "in [0, 30]"),
                 ("cga", 0 <= self.cga < 1, "in [0, 1)"), ("cga_boundary", 0 < self.cga_boundary < 0.5, "in (0, 0.5)"),
                 ("seed", self.seed >= 0, ">= 0")]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"must be {rule}, got {getattr(self, name)!r}", path=name, source=_SETTINGS_SOURCE)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data; fields added after the first release are left out at their defaults,
        so a checkpoint written before them resumes under the same settings."""
        data = asdict(self)
        for name, default in _ADDED_LATER.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        names = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class TrainResult:
    """What a run did: steps, per-step history, final metrics (empty if stopped early), throughput."""

    steps: int
    total_steps: int
    history: list[dict[str, Any]]
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_second: float = 0.0
    out: Path | None = None

    @property
    def completed(self) -> bool:
        return self.steps >= self.total_steps

    @property
    def losses(self) -> list[list[float]]:
        return [record["losses"] for record in self.history]
