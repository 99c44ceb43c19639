"""sigmaReparam: linear weights used as ``gamma / sigma(W) * W``.

Paper: "Stabilizing Transformer Training by Preventing Attention Entropy
Collapse", Zhai et al., ICML 2023, arXiv:2303.06296. ``sigma(W)`` is the
spectral norm of the weight, estimated with one power-iteration step per
training forward (the left singular vector ``u`` is kept as state, with no
gradient), and ``gamma`` is a learned scalar (initialised to 1, so every layer
starts with spectral norm 1).

The supernet applies it to views of its shared tensors
(:class:`nas.supernet.elastic.SharedStore`); :func:`apply_sigma_reparam` puts it
on a plain model (linear layers and 1x1 convolutions) through
``torch.nn.utils.parametrize``, and :func:`remove_sigma_reparam` bakes the
effective weights in for export.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["spectral_step", "SigmaReparam", "apply_sigma_reparam", "remove_sigma_reparam"]

_EPS = 1e-12


def spectral_step(matrix: torch.Tensor, left: torch.Tensor, *, update: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma, u)``: the spectral-norm estimate of ``matrix`` (rows x cols) from the left vector ``left``.

    With ``update`` one power-iteration step refines ``u`` first. ``sigma``
    carries gradients to ``matrix``; ``u`` does not.
    """
    with torch.no_grad():
        left = left / left.norm().clamp_min(_EPS)
        right = matrix.t() @ left
        right = right / right.norm().clamp_min(_EPS)
        if update:
            left = matrix @ right
            left = left / left.norm().clamp_min(_EPS)
    return torch.dot(left, matrix @ right), left


class SigmaReparam(nn.Module):
    """A parametrization ``W -> gamma / sigma(W) * W`` for one weight (any shape; rows are the outputs)."""

    u: torch.Tensor

    def __init__(self, rows: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        vector = torch.randn(rows, generator=generator)
        self.register_buffer("u", (vector / vector.norm()).to(device))
        self.gamma = nn.Parameter(torch.ones((), device=device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        sigma, left = spectral_step(weight.reshape(weight.shape[0], -1), self.u, update=self.training)
        if self.training:
            with torch.no_grad():
                self.u.copy_(left)
        return weight * (self.gamma / sigma.clamp_min(_EPS))


def _linear_weights(model: nn.Module) -> list[nn.Module]:
    out: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            out.append(module)
        elif (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1):
            out.append(module)
    return out


def apply_sigma_reparam(model: nn.Module, *, seed: int = 0) -> int:
    """Put :class:`SigmaReparam` on every linear layer and 1x1 convolution of ``model``; returns how many."""
    generator = torch.Generator().manual_seed(seed)
    modules = _linear_weights(model)
    for module in modules:
        weight: torch.Tensor = module.weight  # type: ignore[assignment]
        parametrize.register_parametrization(module, "weight", SigmaReparam(weight.shape[0], generator=generator,
                                                                          device=weight.device))
    return len(modules)


def remove_sigma_reparam(model: nn.Module) -> None:
    """Replace every sigmaReparam weight by its current effective value (plain modules again)."""
    model.eval()
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
