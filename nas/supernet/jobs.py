"""What a :class:`~nas.supernet.trainer.Trainer` trains: the supernet under the sandwich rule, or one model alone.

A job gives the module, the subnets of each step (the first is the distillation teacher), how to run a subnet
forward, its description for the checkpoint, and its validation metrics when training completes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from nas.arch import Arch
from nas.blocks.fakequant import quantized_layers
from nas.blocks.moe import auxiliary_loss
from nas.blocks.ofq import QatOptions, configure_qat, finish_qat
from nas.build import build
from nas.errors import NasError
from nas.supernet.checkpoint import CheckpointError, checkpoint_file, read_torch_file
from nas.supernet.evaluate import EvalBatches, accuracy, recalibrate_batchnorm
from nas.supernet.proxy import ProxyScale
from nas.supernet.sigma import apply_sigma_reparam, remove_sigma_reparam
from nas.supernet.supernet import Supernet

__all__ = ["Job", "SupernetJob", "ModelJob", "precision_label", "initial_weights"]


def initial_weights(path: str) -> dict[str, torch.Tensor]:
    """The weights a run starts from (``nas train --init``): a stand-alone run's ``model.pt``, its
    ``checkpoint.pt`` (or run directory), or a plain state-dict file.

    Raises:
        CheckpointError: unreadable, or holding no model weights.
    """
    data = read_torch_file(checkpoint_file(path))
    if isinstance(data, dict) and data.get("kind", "model") == "model":
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                return data[key]
        if data and all(isinstance(value, torch.Tensor) for value in data.values()):
            return data
    raise CheckpointError(f"{path}: holds no stand-alone model's weights (a model.pt or checkpoint.pt of `nas train`, "
                          "or a state dict)")


def precision_label(arch: Arch) -> str | list[str]:
    """The blocks' precisions as ``WEIGHTS/ACTIVATIONS`` (with ``, ffn WEIGHTS/ACTIVATIONS`` where the FFN's
    differ): one label if every block has the same, else one per block in execution order."""
    labels = []
    for block in (block for stage in arch.stages for block in stage.blocks):
        precision = block.precision
        label = "fp32" if precision.is_default else f"{precision.weights}/{precision.activations}"
        ffn = (precision.ffn_weights or precision.weights, precision.ffn_activations or precision.activations)
        if ffn != (precision.weights, precision.activations):
            label += f", ffn {ffn[0]}/{ffn[1]}"
        labels.append(label)
    return labels[0] if len(set(labels)) == 1 else labels


class Job:
    """What a :class:`Trainer` trains: a module, the subnets of each step, and how to score the result."""

    kind: str = ""
    module: nn.Module
    resolution: int
    channels: int
    precision: str | list[str] = "fp32"
    """The precision it trains at (the checkpoint records it and a resume under another is refused): one
    label if every block shares it, else one per block (:func:`precision_label`)."""

    def subnets(self, epoch: int, step: int) -> list[Arch | None]:
        """The subnets of step ``step`` of ``epoch`` (the first is the distillation teacher)."""
        raise NotImplementedError

    def forward(self, module: nn.Module, images: torch.Tensor, subnet: Arch | None) -> torch.Tensor:
        raise NotImplementedError

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The auxiliary loss of the last forward (MoE load balancing) to add to the task loss; None: none."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The checkpoint's ``job`` field."""
        raise NotImplementedError

    def metrics(self, batches: EvalBatches) -> dict[str, float]:
        """Validation accuracies at the end of training (BatchNorm recalibrated)."""
        raise NotImplementedError


class SupernetJob(Job):
    """The supernet under the sandwich rule: largest, smallest, and ``num_random`` sampled subnets per step."""

    kind = "supernet"

    def __init__(self, supernet: Supernet, *, num_random: int, seed: int, ends: str = "fixed"):
        self.module = self.supernet = supernet
        self.num_random = num_random
        self.seed = seed
        self.ends = ends
        scale = supernet.scale
        self.resolution = scale.resolution or supernet.proxy(supernet.largest).input.resolution
        self.channels = supernet.proxy(supernet.largest).input.channels

    def subnets(self, epoch: int, step: int) -> list[Arch | None]:
        supernet = self.supernet
        drawn = [supernet.sample(np.random.default_rng([self.seed, epoch, step, k])) for k in range(self.num_random)]
        if self.ends == "fixed":
            return [supernet.largest, supernet.smallest, *drawn]
        ends = [supernet.sample_end(np.random.default_rng([self.seed, epoch, step, 1 << 20, side]), end)
                for side, end in enumerate((1, -1))]
        return [*ends, *drawn]

    def forward(self, module: nn.Module, images: torch.Tensor, subnet: Arch | None) -> torch.Tensor:
        return module(images, subnet)

    def auxiliary_loss(self) -> torch.Tensor | None:
        return self.supernet.auxiliary_loss()

    def describe(self) -> dict[str, Any]:
        return {"spec": self.supernet.spec.to_dict()}

    def metrics(self, batches: EvalBatches) -> dict[str, float]:
        out = {}
        for name, arch in (("largest", self.supernet.largest), ("smallest", self.supernet.smallest)):
            model = self.supernet.extract(arch)
            recalibrate_batchnorm(model, batches.calibration)
            out[f"{name}_accuracy"] = accuracy(model, batches.validation)
        return out


class ModelJob(Job):
    """One architecture trained alone, at ``scale`` (initial weights from ``seed``)."""

    kind = "model"

    def __init__(self, arch: Arch, scale: ProxyScale, *, seed: int, sigma_reparam: bool = False,
                 qat: QatOptions | None = None, init: str | None = None):
        self.arch = arch
        self.scale = scale
        self.proxied = scale.apply(arch)
        self.precision = precision_label(arch)
        self.sigma_reparam = sigma_reparam
        self.qat = qat or QatOptions()  # OFQ's remedies: none
        self.init = init
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.module = self._built(seed, initial=None if init is None else initial_weights(init))
        self.resolution = self.proxied.input.resolution
        self.channels = self.proxied.input.channels

    def _built(self, seed: int = 0, initial: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The proxied arch built as it trains: from ``initial`` weights where given, with sigmaReparam and
        OFQ's options where asked for.

        Raises:
            NasError: ``initial`` does not fit the model; OFQ's options without a block whose weights are
                quantised to an integer format.
        """
        module = build(self.proxied)
        if initial is not None:
            try:
                module.load_state_dict(initial)  # a float model's weights: its quantisers stay uncalibrated
            except RuntimeError as exc:
                raise NasError(f"--init {self.init}: its weights do not fit {self.arch.name or 'the arch'} at this "
                               f"proxy scale: {str(exc).strip().splitlines()[-1].strip()}") from None
        if self.sigma_reparam:
            apply_sigma_reparam(module, seed=seed)
        if self.qat.enabled and not configure_qat(module, self.qat):
            raise NasError(f"--statsq/--cga act on integer weight formats, but no block of "
                           f"{self.arch.name or 'the arch'} quantises its weights to one (precision {self.precision}); "
                           "add --precision, e.g. int4")
        return module

    def subnets(self, epoch: int, step: int) -> list[Arch | None]:
        return [None]

    def forward(self, module: nn.Module, images: torch.Tensor, subnet: Arch | None) -> torch.Tensor:
        return module(images)

    def auxiliary_loss(self) -> torch.Tensor | None:
        return auxiliary_loss(self.module)

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "scale": self.scale.to_dict(),
                **({"init": self.init} if self.init is not None else {})}

    def metrics(self, batches: EvalBatches) -> dict[str, float]:
        recalibrate_batchnorm(self.module, batches.calibration)
        return {"accuracy": accuracy(self.module, batches.validation)}

    def export(self) -> dict[str, Any]:
        """The trained model for ``nas export``: the proxied arch and plain weights (sigmaReparam baked in, weight
        ranges fixed as trained, OFQ's frozen weights written in), which ``build(proxied)`` loads as they are."""
        model = build(self.proxied)
        state = self.module.state_dict()
        if self.sigma_reparam or list(quantized_layers(self.module)):
            trained = self._built()
            trained.load_state_dict(state)
            if self.sigma_reparam:
                remove_sigma_reparam(trained)
            finish_qat(trained)
            state = trained.state_dict()
        model.load_state_dict(state)
        return {"format": "nas-model", "version": 1, "arch": self.proxied.to_dict(), "source_arch": self.arch.to_dict(),
                "scale": self.scale.to_dict(), "state_dict": model.state_dict()}
