"""The weight-sharing supernet over a space, at a proxy scale.

Example:
    >>> import numpy as np, torch
    >>> from nas.supernet import ProxyScale, Supernet
    >>> net = Supernet.create("convnext", scale=ProxyScale(width=0.125, resolution=32, num_classes=10),
    ...                       scan=64)  # doctest: +SKIP
    >>> arch = net.sample(np.random.default_rng(0))  # doctest: +SKIP
    >>> net.set_active(arch); net(torch.randn(2, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from nas.arch import Arch
from nas.blocks.moe import auxiliary_loss
from nas.build import Model, build
from nas.errors import NasError
from nas.lru import LruCache
from nas.space import Space, load_space
from nas.supernet.checkpoint import CheckpointError, checkpoint_file, load_checkpoint
from nas.supernet.elastic import SHARING_VERSION, Capacity, CapacityError, Layouts, SharedStore, Storage, UnitLayout
from nas.supernet.proxy import ProxyError, ProxyScale

__all__ = ["Supernet", "SupernetSpec"]

_UNRECORDED_SHARING = 2  # checkpoints written before the version was recorded: version 2 was current then

_SEARCH_TRIES = 16  # mutations tried per round of the largest/smallest local search
_SEARCH_PATIENCE = 10  # rounds without improvement before the search stops
_SEARCH_ROUNDS = 100
_CACHED_ARCHS = 4096  # proxied archs and capacity checks kept (least recently used dropped)


@dataclass(frozen=True)
class SupernetSpec:
    """Everything that fixes a supernet's tensors: the space, the proxy scale, the sandwich ends, the storage.

    Saved in every checkpoint, so a resumed or evaluated supernet has exactly
    the tensors it was trained with, without scanning the space again.
    """

    space: str
    scale: ProxyScale
    seed: int
    largest: dict[str, Any]
    smallest: dict[str, Any]
    storage: tuple[Storage, ...]
    scan: int
    sigma_reparam: bool = False
    sharing: int = SHARING_VERSION  # what the stored tensors mean

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "scale": self.scale.to_dict(), "seed": self.seed, "largest": self.largest,
                "smallest": self.smallest, "storage": [record.to_dict() for record in self.storage],
                "scan": self.scan, "sigma_reparam": self.sigma_reparam, "sharing": self.sharing}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SupernetSpec:
        return cls(space=data["space"], scale=ProxyScale(**data["scale"]), seed=int(data["seed"]),
                   largest=data["largest"], smallest=data["smallest"],
                   storage=tuple(Storage.from_dict(item) for item in data["storage"]), scan=int(data["scan"]),
                   sigma_reparam=bool(data.get("sigma_reparam", False)),
                   sharing=int(data.get("sharing", _UNRECORDED_SHARING)))

    @property
    def parameters(self) -> int:
        """Trained numbers in the shared tensors (what training memory grows with)."""
        return sum(math.prod(record.shape) for record in self.storage if record.parameter)

    def settings(self) -> dict[str, Any]:
        """What a resumed run must agree on: the user-chosen part, and what the stored tensors mean."""
        return {"space": self.space, "scale": self.scale.to_dict(), "seed": self.seed, "scan": self.scan,
                "sigma_reparam": self.sigma_reparam, "sharing": self.sharing}


class Supernet(nn.Module):
    """Weight sharing over every point of a space: one set of max-size tensors, any subnet a view of them.

    A subnet is a point of the space (a full-scale :class:`~nas.arch.Arch`);
    the supernet brings it to its proxy scale (:meth:`proxy`), lays it out as
    :func:`nas.build.plan` units whose skeletons are built once per unit
    signature, and runs each unit with :func:`torch.func.functional_call` on
    views of the shared tensors (:mod:`nas.supernet.elastic` has the keys,
    :mod:`nas.supernet.slicing` the rules, from what each kind declares on its
    config). So every registered kind works without an elastic version
    of its module, and :meth:`extract` returns exactly what :func:`nas.build`
    returns, with the views copied in.

    Elasticity: depth (a stage's first ``d`` block positions), width (prefix
    channels), MLP ratio (prefix hidden units), heads (prefix heads of fused
    ``qkv``, cut per part), kernel sizes (centred crops) and the token-mixer
    choice per block (a tensor set per kind and position; the FFN at a
    position is shared by all kinds), and the precision per block (the same
    float weights, fake-quantised per forward to the sampled formats with
    ranges from the batch: :mod:`nas.supernet.elastic`).

    Trade-offs: running plain modules through ``functional_call`` costs
    Python time per forward against a hand-written elastic layer
    (``bench/supernet_rank.py`` measures what sharing costs a pass), and buys
    kind-independence; capacity is fixed from a scan of the space
    before training (see :class:`~nas.supernet.elastic.Capacity`), so a point
    outside what the scan covered raises :class:`CapacityError` (:meth:`sample`
    never draws one). Points invalid at the proxy resolution raise
    :class:`~nas.supernet.proxy.ProxyError`.

    The sandwich ends :attr:`largest` and :attr:`smallest` are the points with
    the most and fewest parameters at proxy scale, found by local search
    (``Space.mutate``) from the best of the scanned samples. :meth:`sample_end`
    draws ends that vary from step to step instead: every size decision at its
    extreme, every kind decision at random.
    """

    def __init__(self, spec: SupernetSpec, *, space: Space | None = None):
        super().__init__()
        self.spec = spec
        self.space = space if space is not None else load_space(spec.space)
        self.scale = spec.scale
        self.store = SharedStore(list(spec.storage), seed=spec.seed, sigma_reparam=spec.sigma_reparam)
        self.layouts = Layouts()
        self.largest = Arch.from_dict(spec.largest)
        self.smallest = Arch.from_dict(spec.smallest)
        self.active: Arch | None = None
        self._auxiliary_loss: torch.Tensor | None = None
        self._proxied = LruCache[str, Arch](maxsize=_CACHED_ARCHS)
        self._checked = LruCache[str, NasError | None](maxsize=_CACHED_ARCHS)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(cls, space: str, *, scale: ProxyScale, seed: int = 0, scan: int = 1000,
               sigma_reparam: bool = False, progress: Callable[[str], None] | None = None) -> Supernet:
        """A freshly initialised supernet over ``space`` (a shipped space name or a space file).

        :meth:`plan`'s spec, with its tensors made; the arguments are :meth:`plan`'s.
        """
        return cls(cls.plan(space, scale=scale, seed=seed, scan=scan, sigma_reparam=sigma_reparam,
                            progress=progress))

    @classmethod
    def plan(cls, space: str, *, scale: ProxyScale, seed: int = 0, scan: int = 1000, sigma_reparam: bool = False,
             progress: Callable[[str], None] | None = None) -> SupernetSpec:
        """The spec of a supernet over ``space``, found by scanning it, before any tensor is made.

        Its :attr:`~SupernetSpec.parameters` say what the supernet will weigh, so a caller can refuse one
        that cannot fit before allocating it.

        Args:
            space: the space, as :func:`nas.space.load_space` takes it.
            scale: the proxy scale every subnet runs at.
            seed: seeds the scan, the local search and the initial weights.
            scan: number of sampled points whose shapes size the shared tensors; each is also measured
                with every stage at its widest option, so that a width rarely drawn together with some
                mixer kind still finds its tensors allocated.
            sigma_reparam: use linear weights as ``gamma / sigma(W) * W``.
            progress: called with a line of text per phase (for logs).

        Raises:
            NasError: no sampled point is valid at the proxy scale.
        """
        if scan < 1:
            raise NasError(f"scan must be >= 1 sampled points, got {scan}")
        loaded = load_space(space)
        rng = np.random.default_rng(seed)
        layouts, capacity = Layouts(max_units=1 << 16), Capacity()
        pool: list[tuple[int, Arch]] = []
        for vector in _with_widest_stages(loaded, loaded.sample_vectors(rng, scan)):
            arch = loaded.decode(vector)
            size = _measure(scale, layouts, capacity, arch)
            if size is not None:
                pool.append((size, arch))
        if not pool:
            raise NasError(f"space {space!r}: none of {scan} sampled points is valid at the proxy scale "
                           f"(resolution {scale.resolution}, width {scale.width}); try a larger --resolution")
        if progress is not None:
            progress(f"scanned {scan} points of {space!r} and their widest-stage copies: {len(pool)} valid at "
                     "proxy scale")
        largest = _local_search(loaded, scale, layouts, capacity, max(pool, key=lambda item: item[0]), rng, 1)
        smallest = _local_search(loaded, scale, layouts, capacity, min(pool, key=lambda item: item[0]), rng, -1)
        return SupernetSpec(space=space, scale=scale, seed=seed, largest=largest.to_dict(),
                            smallest=smallest.to_dict(), storage=tuple(capacity.storage()), scan=scan,
                            sigma_reparam=sigma_reparam)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Supernet:
        """A trained supernet from a checkpoint file or a run directory holding ``checkpoint.pt``.

        Raises:
            CheckpointError: missing, corrupt, not a supernet checkpoint, or trained under another
                :data:`~nas.supernet.elastic.SHARING_VERSION` (the message names the file).
        """
        path = checkpoint_file(path)
        data = load_checkpoint(path, kind="supernet")
        try:
            spec = SupernetSpec.from_dict(data["job"]["spec"])
            if spec.sharing != SHARING_VERSION:
                raise CheckpointError(f"{path}: trained with weight-sharing version {spec.sharing}; this nas "
                                      f"shares weights as version {SHARING_VERSION} (nas.supernet.elastic."
                                      "SHARING_VERSION): train the supernet again")
            supernet = cls(spec)
            supernet.load_state_dict(data["model"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a usable supernet checkpoint: {reason}") from None
        supernet.eval()
        return supernet

    # -- subnets -------------------------------------------------------------------------------

    def proxy(self, arch: Arch) -> Arch:
        """``arch`` (a point of the space) at the supernet's proxy scale."""
        return self._proxied.get_or_make(arch.id, lambda: self.scale.apply(arch))

    def check(self, arch: Arch) -> str:
        """Empty if the supernet can run ``arch``, else why not (proxy scale or capacity)."""
        problem = self._problem(arch)
        return "" if problem is None else str(problem)

    def _problem(self, arch: Arch) -> NasError | None:
        return self._checked.get_or_make(arch.id, lambda: self._find_problem(arch))

    def _find_problem(self, arch: Arch) -> NasError | None:
        problem: NasError | None = None
        try:
            layouts = self.layouts.of(self.proxy(arch))
        except ProxyError as exc:
            problem = exc
        else:
            reasons = [reason for layout in layouts for slot in layout.slots if (reason := self.store.check(slot))]
            if reasons:
                problem = CapacityError(f"{arch.name or arch.id} needs more than the supernet allocated "
                                        f"({len(reasons)} tensors), e.g. {reasons[0]}")
        return problem

    def layout(self, arch: Arch) -> list[UnitLayout]:
        """The unit layouts of ``arch`` at proxy scale.

        Raises:
            ProxyError: ``arch`` does not fit the proxy resolution.
            CapacityError: ``arch`` needs a tensor the supernet did not allocate.
        """
        problem = self._problem(arch)
        if problem is not None:
            raise problem
        return self.layouts.of(self.proxy(arch))

    def set_active(self, arch: Arch) -> None:
        """Make ``arch`` the subnet that ``forward(x)`` runs (a point of the space, at full scale)."""
        self.layout(arch)
        self.active = arch

    def sample(self, rng: np.random.Generator, *, max_tries: int = 100) -> Arch:
        """A point of the space, drawn uniformly per decision, that the supernet can run.

        Points invalid at the proxy resolution or outside the allocated
        capacity are drawn again, at most ``max_tries`` times.
        """
        for _ in range(max_tries):
            arch = self.space.sample(rng)
            if not self.check(arch):
                return arch
        raise NasError(f"constraint infeasible: no point of space {self.spec.space!r} runnable at the proxy "
                       f"scale in {max_tries} draws")

    def sample_end(self, rng: np.random.Generator, end: int) -> Arch:
        """A sandwich end whose kinds vary: a drawn point with every ordered decision (widths, depths, ratios,
        kernels, resolution) at its last option (``end=1``) or its first (``end=-1``).

        With fixed ends, the mixer, norm and downsampler kinds of :attr:`largest` and :attr:`smallest` get two
        updates every step and every other kind a fraction of one, and the shared layers learn to expect those
        two; points with other kinds then score near chance one-shot. Drawing the kinds spreads the ends'
        updates over all of them. Falls back to the fixed end when the extreme point is invalid or not
        runnable at the proxy scale.
        """
        fixed = self.largest if end > 0 else self.smallest
        space = self.space
        vector = space.sample_vectors(rng, 1)[0]
        ordered = np.array([decision.ordered for decision in space.decisions], dtype=bool)
        last = np.array([len(decision.options) - 1 for decision in space.decisions])
        active = ordered & (vector >= 0)
        vector[active] = last[active] if end > 0 else 0
        if not space.is_valid(vector):
            return fixed
        arch = space.decode(vector)
        return fixed if self.check(arch) else arch

    def num_parameters(self, arch: Arch) -> int:
        """Parameters of the subnet ``arch`` at proxy scale."""
        return sum(layout.parameters for layout in self.layout(arch))

    # -- running ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, arch: Arch | None = None) -> torch.Tensor:
        """Logits of the subnet ``arch`` (default: the active one) on images ``x`` (``B x C x R x R``)."""
        arch = arch if arch is not None else self.active
        if arch is None:
            raise NasError("no active subnet: call set_active(arch) or pass arch")
        store = self.store
        if x.device != self.layouts.device:
            self.layouts = Layouts(device=x.device)
        extra: list[torch.Tensor] = []
        for layout in self.layout(arch):
            module = layout.module
            if module.training != self.training:
                module.train(self.training)
            tensors = {slot.name: store.view(slot) for slot in layout.slots}
            x = functional_call(module, tensors, (x,))
            unit_loss = auxiliary_loss(module)  # read now: a skeleton may run again at another position
            if unit_loss is not None:
                extra.append(unit_loss)
        self._auxiliary_loss = torch.stack(extra).sum() if extra else None
        return x

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The auxiliary losses of the last training forward's subnet (MoE load balancing), summed; None if none."""
        return self._auxiliary_loss

    def extract(self, arch: Arch) -> Model:
        """``nas.build(self.proxy(arch))`` with the shared weights and BatchNorm statistics copied in."""
        layouts = self.layout(arch)
        model = build(self.proxy(arch))
        state: dict[str, torch.Tensor] = {}
        was_training = self.store.training
        self.store.eval()  # sigmaReparam: no power-iteration update while copying
        try:
            with torch.no_grad():
                for layout, prefix in zip(layouts, _module_prefixes(layouts), strict=True):
                    for slot in layout.slots:
                        state[f"{prefix}.{slot.name}"] = self.store.view(slot).detach().clone()
        finally:
            self.store.train(was_training)
        model.load_state_dict(state, strict=True)
        return model.to(next(iter(state.values())).device) if state else model


def _module_prefixes(layouts: Sequence[UnitLayout]) -> list[str]:
    """Each unit's module path inside :class:`nas.build.Model` (stem, stages grouped, head)."""
    counters: dict[int, int] = {}
    out = []
    for layout in layouts:
        index = counters.get(layout.stage, 0)
        counters[layout.stage] = index + 1
        if layout.role == "head":
            out.append("head")
        elif layout.stage < 0:
            out.append(f"stem.{index}")
        else:
            out.append(f"stages.{layout.stage}.{index}")
    return out


def _measure(scale: ProxyScale, layouts: Layouts, capacity: Capacity, arch: Arch) -> int | None:
    """Parameters of ``arch`` at proxy scale (adding it to ``capacity``), or None if it does not fit the scale."""
    try:
        proxied = scale.apply(arch)
    except ProxyError:
        return None
    units = layouts.of(proxied)
    capacity.add(units)
    return sum(layout.parameters for layout in units)


def _local_search(space: Space, scale: ProxyScale, layouts: Layouts, capacity: Capacity, start: tuple[int, Arch],
                  rng: np.random.Generator, sign: int) -> Arch:
    """Hill-climb ``sign * parameters`` with ``Space.mutate`` from ``start``; every point seen grows ``capacity``."""
    best_size, best = start
    stale = 0
    for _ in range(_SEARCH_ROUNDS):
        round_size, round_best = best_size, best
        for _ in range(_SEARCH_TRIES):
            try:
                candidate = space.mutate(best, rng)
            except NasError:
                break
            size = _measure(scale, layouts, capacity, candidate)
            if size is not None and sign * size > sign * round_size:
                round_size, round_best = size, candidate
        stale = stale + 1 if round_best is best else 0
        best_size, best = round_size, round_best
        if stale >= _SEARCH_PATIENCE:
            break
    return best.replace(name=f"{space.name}_{'largest' if sign > 0 else 'smallest'}")


def _with_widest_stages(space: Space, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` followed by their valid copies with every stage width (``stages[i].dim``) at its last option."""
    widths = [index for index, decision in enumerate(space.decisions)
              if decision.ordered and re.fullmatch(r"stages\[\d+\]\.dim", decision.path)]
    if not widths:
        return vectors
    widest = vectors.copy()
    for index in widths:
        widest[:, index] = np.where(widest[:, index] >= 0, len(space.decisions[index].options) - 1, -1)
    keep = np.array([space.is_valid(vector) for vector in widest], dtype=bool)
    return np.concatenate([vectors, widest[keep]])
