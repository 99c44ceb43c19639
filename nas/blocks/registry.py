"""One registry per role, mapping a kind to its module class and its config.

``@register("mixer", "pooling", PoolingCfg)`` on a module class records the
class here and the config schema in :mod:`nas.arch`, so a kind is declared in
exactly one place. Both are :class:`nas.registry.Registry` tables: duplicates
raise; an unknown kind raises :class:`~nas.errors.UnknownKindError` listing the
known kinds, closest first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from nas.arch import ROLES, Component, list_kinds, register_config
from nas.registry import Registry

__all__ = ["register", "module_class", "list_registered", "ffn_parts"]

_MODULES: dict[str, Registry[type]] = {role: Registry(f"{role} kind") for role in ROLES}

ModuleT = TypeVar("ModuleT", bound=type)


def register(role: str, kind: str, config: type[Component]) -> Callable[[ModuleT], ModuleT]:
    """Class decorator: ``kind`` of ``role`` is built by the decorated class from ``config``."""

    def decorate(cls: ModuleT) -> ModuleT:
        register_config(role, kind, config)
        _MODULES[role].add(kind, cls)
        return cls

    return decorate


def module_class(role: str, config: Component) -> type:
    """The module class registered for ``config``'s kind."""
    return _MODULES[role].get(config.kind)


def list_registered(role: str) -> list[str]:
    """Registered kinds of ``role``, sorted."""
    return list_kinds(role)


def ffn_parts(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost FFN submodules of a built block, by dotted name: the modules of a registered FFN kind.

    Where a block's precision overrides its FFN (``Precision.ffn_weights``), these are the layers it covers,
    whichever mixer wired the block (the template, or a fused block that made its own FFN). An FFN inside
    another (an expert of an MoE FFN) belongs to the outer one.
    """
    classes = tuple({_MODULES["ffn"].get(kind) for kind in _MODULES["ffn"].names()})
    found: list[tuple[str, nn.Module]] = []
    for name, sub in block.named_modules():
        if isinstance(sub, classes) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, sub))
    return found
