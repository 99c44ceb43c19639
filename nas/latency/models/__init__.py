"""Reference models: the calibration tables' non-seed models as plain, traceable ``nn.Module`` trees.

One module per family, each written from its paper's architecture table (cited
in the module docstring) and listing its named variants in ``MODELS``.
:data:`REFERENCE_MODELS` maps every name to its :class:`ReferenceModel`
(factory, input resolution, published parameter count and source).
``nas.latency.calibration`` traces them for the calibration rows whose model is
not a zoo point.

Example:
    >>> from nas.latency.models import REFERENCE_MODELS
    >>> model = REFERENCE_MODELS["resnet18"].build(device="meta")
    >>> sum(p.numel() for p in model.parameters())
    11689512
"""

from __future__ import annotations

from nas.errors import UnknownKindError, closest_first
from nas.latency.models import (
    alexnet,
    densenet,
    efficientformerv2,
    efficientnet,
    fastvit,
    ghostnet,
    inception,
    mobilenet,
    mobilenetv3,
    mobileone,
    peleenet,
    pplcnet,
    regnet,
    repvgg,
    res2net,
    resnest,
    resnet,
    resnext,
    shufflenet,
    squeezenet,
    vgg,
    vit,
    xception,
)
from nas.latency.models.base import ReferenceModel

__all__ = ["REFERENCE_MODELS", "ReferenceModel", "get_reference", "list_references"]

_FAMILIES: tuple[tuple[ReferenceModel, ...], ...] = (
    alexnet.MODELS,
    densenet.MODELS,
    efficientformerv2.MODELS,
    efficientnet.MODELS,
    fastvit.MODELS,
    ghostnet.MODELS,
    inception.MODELS,
    mobilenet.MODELS,
    mobilenetv3.MODELS,
    mobileone.MODELS,
    peleenet.MODELS,
    pplcnet.MODELS,
    regnet.MODELS,
    repvgg.MODELS,
    res2net.MODELS,
    resnest.MODELS,
    resnet.MODELS,
    resnext.MODELS,
    shufflenet.MODELS,
    squeezenet.MODELS,
    vgg.MODELS,
    vit.MODELS,
    xception.MODELS,
)


def _collect(families: tuple[tuple[ReferenceModel, ...], ...]) -> dict[str, ReferenceModel]:
    registry: dict[str, ReferenceModel] = {}
    for models in families:
        for model in models:
            if model.name in registry:
                raise ValueError(f"duplicate reference model name {model.name!r}")
            registry[model.name] = model
    return registry


REFERENCE_MODELS: dict[str, ReferenceModel] = _collect(_FAMILIES)
"""Every reference model by name."""


def list_references() -> list[str]:
    """Names of every reference model, sorted."""
    return sorted(REFERENCE_MODELS)


def get_reference(name: str) -> ReferenceModel:
    """The reference model ``name``; an unknown name raises, listing the known ones, closest first."""
    model = REFERENCE_MODELS.get(name)
    if model is None:
        known = list_references()
        close = closest_first(name, known)
        raise UnknownKindError(f"unknown reference model {name!r}; known: {', '.join(close)}")
    return model
