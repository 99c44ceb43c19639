"""Zero-cost proxies: an accuracy signal from one batch at initialisation, for screening candidates.

Each proxy scores a network without training it; higher is better (more
likely to train well). They are cheap and noisy: use them to rank many
candidates before the supernet or training looks at the best.

* ``naswot`` - Mellor et al., "Neural Architecture Search without Training",
  ICML 2021 (arXiv:2006.04647): ``log |K|`` of the ``B x B`` kernel
  ``K[i, j] = sum over units of [code_i == code_j]``, where a unit's code is
  whether its pre-activation is positive for image ``i``. The paper takes ReLU
  units; here every activation module (ReLU, GELU, SiLU, StarReLU, ...) counts
  by the sign of its input, the boundary of its near-linear regions. Codes are
  read in training mode (batch statistics in BatchNorm), without gradients.
* ``synflow`` - Tanaka et al., "Pruning neural networks without any data by
  iteratively conserving synaptic flow", NeurIPS 2020 (arXiv:2006.05467), as a
  NAS proxy in Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS",
  ICLR 2021 (arXiv:2101.08134): every parameter replaced by its absolute value,
  an all-ones input, ``R = sum(output)``; the score is
  ``log sum |theta * dR/dtheta|`` over weight tensors (``ndim >= 2``: the
  convolution and linear weights), in float64 and evaluation mode. Data-free:
  the batch only gives the input shape.
* ``grad_norm`` - Abdelfattah et al. 2021: the sum over weight tensors of the
  L2 norm of the cross-entropy gradient on the batch (training mode).

Scores are deterministic for a fixed ``seed``: an Arch is built, and every
random draw made, under ``torch.random.fork_rng`` seeded with it, so the
caller's random state is left as it was. A module passed in is deep-copied
first; it is never changed (no gradients, no running statistics, no weights).

Example:
    >>> import nas, torch
    >>> from nas.supernet.zero_cost import score
    >>> arch = nas.Arch.load("tests/tiny/mixer_pooling.yaml")
    >>> images = torch.randn(16, 3, 64, 64)
    >>> value = score(arch, images, proxy="synflow")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.arch import Arch
from nas.blocks.common import StarReLU
from nas.build import build
from nas.data import Dataset, load_dataset, loaders
from nas.errors import NasError, UnknownKindError
from nas.registry import Registry

__all__ = [
    "PROXIES",
    "DEFAULT_PROXY",
    "ZeroCostError",
    "score",
    "score_archs",
    "score_many",
    "default_batch",
    "naswot",
    "synflow",
    "grad_norm",
]

Batch = Tensor | tuple[Tensor, Tensor]
ProxyFn = Callable[[nn.Module, Tensor, "Tensor | None"], float]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, StarReLU)

PROXIES: Registry[ProxyFn] = Registry("zero-cost proxy")
# NASWOT is the default: it ranks the rank bench's archs best of the three (bench/supernet_rank.py prints each
# proxy's Kendall tau), while synflow, the strongest on NAS-Bench-201 (Abdelfattah et al. 2021), ranks them worse
# and overflows float64 on some (LayerNorm flattens its all-ones input, so many archs tie).
DEFAULT_PROXY = "naswot"


class ZeroCostError(NasError):
    """A proxy cannot score this network or batch (the message says why)."""


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]


@PROXIES.register("naswot")
def naswot(model: nn.Module, images: Tensor, labels: Tensor | None) -> float:
    """Mellor et al. 2021: log-determinant of the activation-code kernel over the batch (``B >= 2``).

    Windowed blocks (Swin, EfficientViT) run their activations with the windows folded into the batch
    dimension, batch-major; those codes are unfolded back to one row per image.
    """
    batch = images.shape[0]
    if batch < 2:
        raise ZeroCostError(f"naswot needs a batch of at least 2 images, got {batch}")
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=images.device)

    def accumulate(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if inputs[0].shape[0] % batch:
            raise ZeroCostError(f"naswot: an activation of {type(module).__name__} has a leading dimension of "
                                f"{inputs[0].shape[0]}, not a multiple of the batch {batch}")
        codes = (inputs[0] > 0).reshape(batch, -1).double()
        kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

    handles = [m.register_forward_hook(accumulate) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    if not handles:
        raise ZeroCostError("naswot needs activation modules; the network has none")
    model.train()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


@PROXIES.register("synflow")
def synflow(model: nn.Module, images: Tensor, labels: Tensor | None) -> float:
    """Tanaka et al. 2020: log of the synaptic flow through ``|theta|`` from an all-ones input (float64)."""
    model.double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.abs_()
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=images.device)
    weights = _weights(model)
    gradients = torch.autograd.grad(model(ones).sum(), weights, allow_unused=True)
    total = sum(float((w.detach() * g).abs().sum()) for w, g in zip(weights, gradients, strict=True) if g is not None)
    if math.isnan(total):
        raise ZeroCostError("synflow is NaN (the flow overflows float64)")
    return math.log(total) if total > 0 else float("-inf")


@PROXIES.register("grad_norm")
def grad_norm(model: nn.Module, images: Tensor, labels: Tensor | None) -> float:
    """Abdelfattah et al. 2021: sum of the weight tensors' cross-entropy gradient norms on the batch."""
    if labels is None:
        raise ZeroCostError("grad_norm needs labels: pass the batch as (images, labels)")
    model.train()
    logits = model(images)
    if labels.dim() == 1 and len(labels) and int(labels.max()) >= logits.shape[-1]:
        raise ZeroCostError(f"label {int(labels.max())} is out of range for {logits.shape[-1]} classes")
    weights = _weights(model)
    gradients = torch.autograd.grad(F.cross_entropy(logits, labels), weights, allow_unused=True)
    return sum(float(g.norm()) for g in gradients if g is not None)


def _proxy(name: str) -> ProxyFn:
    try:
        return PROXIES.get(name)
    except UnknownKindError as exc:
        raise UnknownKindError(exc.message, path="proxy") from None


def _split_batch(batch: Batch) -> tuple[Tensor, Tensor | None]:
    images, labels = (batch, None) if isinstance(batch, Tensor) else batch
    if images.dim() != 4 or not images.is_floating_point():
        raise ZeroCostError(f"images must be a float B x C x H x W tensor, got {tuple(images.shape)} {images.dtype}")
    return images, labels


def _at_input(arch: Arch, images: Tensor) -> Arch:
    """``arch`` at the batch's resolution and channel count (validated again)."""
    _, channels, height, width = images.shape
    if height != width:
        raise ZeroCostError(f"an Arch takes square images, got {height}x{width}")
    if (arch.input.resolution, arch.input.channels) == (height, channels):
        return arch
    return arch.replace(input=dataclasses.replace(arch.input, resolution=height, channels=channels))


def _materialise(model_or_arch: nn.Module | Arch, images: Tensor) -> nn.Module:
    if isinstance(model_or_arch, Arch):
        return build(_at_input(model_or_arch, images), device=images.device)
    return copy.deepcopy(model_or_arch)


def _run(function: ProxyFn, model: nn.Module, images: Tensor, labels: Tensor | None, seed: int) -> float:
    device = next((p.device for p in model.parameters()), images.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return function(model, images.to(device), None if labels is None else labels.to(device))


def score(model_or_arch: nn.Module | Arch, batch: Batch, *, proxy: str, seed: int = 0) -> float:
    """One proxy's score of a network on a batch; higher is better.

    Args:
        model_or_arch: a module (deep-copied, never changed) or an Arch (built
            at the batch's resolution and channel count, with weights drawn from ``seed``).
        batch: images ``B x C x H x W`` (normalised as for training), or
            ``(images, labels)``; ``grad_norm`` needs the labels.
        proxy: a name in :data:`PROXIES` (``naswot``, ``synflow``, ``grad_norm``).
        seed: seeds the initialisation of an Arch and any random op in the forward pass.

    Raises:
        UnknownKindError: an unknown proxy name (the known ones are listed).
        ZeroCostError: the proxy cannot score this network or batch.
    """
    function = _proxy(proxy)
    images, labels = _split_batch(batch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _materialise(model_or_arch, images)
    return _run(function, model, images, labels, seed)


def score_archs(
    archs: Sequence[nn.Module | Arch], batch: Batch, *, proxies: Sequence[str] | None = None, seed: int = 0,
) -> dict[str, list[float]]:
    """Several proxies over many networks, each built once.

    Args:
        proxies: names in :data:`PROXIES`; None: every one (sorted by name).

    Returns:
        ``{proxy: [score of archs[0], score of archs[1], ...]}``, equal to
        calling :func:`score` for every pair.
    """
    functions = {name: _proxy(name) for name in (PROXIES.names() if proxies is None else proxies)}
    images, labels = _split_batch(batch)
    scores: dict[str, list[float]] = {name: [] for name in functions}
    for item in archs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _materialise(item, images)
        for name, function in functions.items():
            scores[name].append(_run(function, copy.deepcopy(model), images, labels, seed))
    return scores


@functools.cache
def _bundled() -> Dataset:
    return load_dataset(None)


def default_batch(
    *, resolution: int, channels: int = 3, batch_size: int = 16, seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """A shuffled batch of the bundled dataset's training images (no augmentation), for scoring.

    Images are resized to ``resolution``, given ``channels`` and normalised
    exactly as :func:`nas.data.loaders` serves them; ``seed`` picks the images.
    """
    train, _ = loaders(_bundled(), batch_size=batch_size, resolution=resolution, channels=channels, seed=seed)
    return next(train.iter_epoch(0))


def score_many(
    archs: Sequence[Arch], *, proxy: str = DEFAULT_PROXY, batch: Batch | None = None, batch_size: int = 16,
    seed: int = 0,
) -> list[float]:
    """One proxy's score for each Arch (the search's ``zero-cost`` accuracy source).

    Args:
        archs: the candidates.
        proxy: a name in :data:`PROXIES`.
        batch: the batch to score on; None: :func:`default_batch` at each
            Arch's own input resolution and channel count.
        batch_size: images in the default batch.
        seed: weights and default-batch seed.

    Returns:
        ``score(arch, batch, proxy=proxy, seed=seed)`` for each Arch, in order.
    """
    scores = []
    for arch in archs:
        images = batch
        if images is None:
            images = default_batch(resolution=arch.input.resolution, channels=arch.input.channels,
                                   batch_size=batch_size, seed=seed)
        scores.append(score(arch, images, proxy=proxy, seed=seed))
    return scores
