"""Reference models: the calibration tables' non-seed models (CNNs and transformers) as traceable modules.

One module per family, each written from its paper's architecture table (cited
in the module docstring) and listing its named variants in ``MODELS``.
:data:`REFERENCE_MODELS` registers every name with its :class:`ReferenceModel`
(factory, input resolution, published parameter count and source); a new family
is a module here and one line in ``_FAMILIES``.
:mod:`nas.latency.calibration.measurements` traces them for the calibration rows
whose model is not a zoo point.

Example:
    >>> from nas.latency.calibration.models import REFERENCE_MODELS
    >>> model = REFERENCE_MODELS.get("resnet18").build(device="meta")
    >>> sum(p.numel() for p in model.parameters())
    11689512
"""

from __future__ import annotations

from nas.latency.calibration.models import (
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
    nextvit,
    peleenet,
    pplcnet,
    pvt,
    regnet,
    repnext,
    repvgg,
    res2net,
    resnest,
    resnet,
    resnext,
    shufflenet,
    squeezenet,
    tinyvit,
    tome,
    twins,
    vgg,
    vit,
    xception,
)
from nas.latency.calibration.models.base import ReferenceModel
from nas.registry import Registry

__all__ = ["REFERENCE_MODELS", "ReferenceModel"]

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
    nextvit.MODELS,
    peleenet.MODELS,
    pplcnet.MODELS,
    pvt.MODELS,
    regnet.MODELS,
    repnext.MODELS,
    repvgg.MODELS,
    res2net.MODELS,
    resnest.MODELS,
    resnet.MODELS,
    resnext.MODELS,
    shufflenet.MODELS,
    squeezenet.MODELS,
    tinyvit.MODELS,
    tome.MODELS,
    twins.MODELS,
    vgg.MODELS,
    vit.MODELS,
    xception.MODELS,
)


def _register(families: tuple[tuple[ReferenceModel, ...], ...]) -> Registry[ReferenceModel]:
    registry: Registry[ReferenceModel] = Registry("reference model")
    for models in families:
        for model in models:
            registry.register(model.name)(model)
    return registry


REFERENCE_MODELS = _register(_FAMILIES)
"""Every reference model by name: ``REFERENCE_MODELS.get(name)`` (an unknown name lists the closest), ``.names()``."""
