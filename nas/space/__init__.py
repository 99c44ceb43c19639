"""Search spaces: declarative YAML files read into a :class:`Space` of :class:`~nas.arch.Arch` points.

A space file (``spaces/*.yaml``) has the shape of an Arch file (``schema: 1``,
``input``, ``stem``, ``stages``, ``head``) plus ``name`` and ``description``,
with a *choice* wherever a value may vary:

* ``{choice: [a, b, c]}``: categorical; a mutation may jump to any other option.
* ``{ordinal: [48, 64, 96]}``: ordered options; a mutation moves one step.
* ``{range: [2, 8], step: 2}``: the integers 2, 4, 6, 8 (both ends included), ordered.

Options may be whole sub-trees with choices of their own; those exist only
while their option is chosen (conditional choices). A mixer choice is written
``mixer: {choice: [{kind: pooling, pool_size: {choice: [3, 5]}}, {kind: attention,
heads: {choice: [4, 8]}}]}``; ``pool_size`` is a decision only when the mixer
is ``pooling``. Choices may stand for any value or sub-tree: a field, a
component, a block, a stage's ``blocks`` or a whole stage; the number of stages
is fixed per space. ``kind`` itself cannot be a choice: choose among whole
components instead, each with its own parameters.

A stage's ``blocks`` are written as in an Arch file: one block,
``{repeat: R, block: B}``, ``{repeat: R, pattern: [B1, B2]}`` or a list of
these (runs, in order). ``R`` may be a choice of integers; 0 drops the run (a
stage still needs one block). By default a run repeats *one* set of decisions
(every block of the run is the same); ``independent: true`` gives each repeated
block (or pattern) its own decisions, made only for blocks that exist at the
chosen depth. ``id: name`` on a choice and ``{same: name}`` elsewhere tie two
places to one decision (both blocks of a Swin pair share their heads).
Components, blocks and fields left out take the Arch file's defaults
(``ffn: none``, ``norm: none``, ``layer_scale: null``, float32 ``precision``,
each kind's own field defaults). ``spaces/README.md`` has the full format.

The package's modules: :mod:`~nas.space.compiler` (file -> tree, errors with file:line),
:mod:`~nas.space.tree` (the compiled tree), :mod:`~nas.space.vectors` (the point
vector and numpy moves on it), :mod:`~nas.space.validity` (batch validity),
:mod:`~nas.space.match` (Arch -> vector) and :mod:`~nas.space.space` (:class:`Space`).

Validity is decided by Arch's own rules alone (heads divide the width, the
window fits the feature map, ...), through the components' ``check`` and
``output_size``: the space never restates them. A
point is a fixed-length ``int16`` vector with one slot per decision holding
the option index, ``-1`` where the decision does not exist (its option is not
taken, or its block is beyond the chosen depth). Sampling, mutation, crossover
and encoding work on these vectors with numpy and an explicit
``numpy.random.Generator``; only :meth:`Space.decode` builds an Arch. Sampling
under constraints draws again a bounded number of times, then fails with
"constraint infeasible in this space".

Example:
    >>> import numpy as np
    >>> import nas
    >>> space = nas.space.load_space("convnext")
    >>> arch = space.sample(np.random.default_rng(0))
    >>> space.contains(nas.zoo.get("convnext_tiny"))
    (True, '')
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from nas.errors import UnknownKindError, closest_first
from nas.space.space import Space
from nas.space.tree import VECTOR_DTYPE, Decision

__all__ = ["Space", "Decision", "VECTOR_DTYPE", "load_space", "list_spaces", "spaces_dir"]


# ---------------------------------------------------------------------------
# shipped spaces


def spaces_dir() -> Path:
    """Folder holding the shipped space files (the package ``nas.spaces``)."""
    return Path(str(resources.files("nas.spaces")))


def list_spaces() -> list[str]:
    """Names of the shipped spaces, sorted."""
    return sorted(path.stem for path in spaces_dir().glob("*.yaml"))


def load_space(name: str) -> Space:
    """A shipped space by name (``spaces/<name>.yaml``), or a space file by path (a name with ``/`` or ``.yaml``).

    Shipped spaces are loaded once per process.

    Raises:
        UnknownKindError: no shipped space of that name (the known ones are listed, closest first).
        ConfigError: the file is not a valid space (see :meth:`Space.load`).

    Example:
        >>> load_space("swin").contains(nas.zoo.get("swin_tiny"))  # doctest: +SKIP
        (True, '')
    """
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Space.load(name)
    return _shipped(name)


@cache
def _shipped(name: str) -> Space:
    path = spaces_dir() / f"{name}.yaml"
    if not path.is_file():
        known = list_spaces()
        close = closest_first(name, known)
        raise UnknownKindError(f"unknown space {name!r}; known: {', '.join(close)}")
    return Space.load(path)
