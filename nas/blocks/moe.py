"""Mixture-of-experts FFN: E expert MLPs, a top-k router, a capacity per expert, a load-balancing loss.

Paper: "M3ViT: Mixture-of-Experts Vision Transformer for Efficient Multi-task
Learning with Model-Accelerator Co-design", Liang et al., NeurIPS 2022,
arXiv:2210.14793; it builds on the sparse-MoE layers of GShard
(arXiv:2006.16668), Switch Transformer (arXiv:2101.03961) and V-MoE
(arXiv:2106.05974). The FFN of a block becomes ``experts`` MLPs of hidden width
``ratio * dim``; a linear router scores every token, keeps its ``top_k``
experts and weights their outputs by the router's probabilities renormalised
over the kept ones (they sum to 1 per token; with ``top_k = 1`` the weight is
1, so, as with M3ViT's gate, the router then learns from the balancing loss
alone). M3ViT's multi-task routing is a
router per task: a task id picks the router (:func:`routing_task`); a
single-task model has one.

Why a capacity (GShard, Switch): each expert processes a fixed number of
token slots, ``capacity = ceil(capacity_factor * top_k * tokens / experts)``
(tokens of the whole batch, so what is dropped depends on the batch, as in GShard),
so every tensor has a static shape: the experts run as one batched product
over an ``experts x capacity x dim`` buffer, the model builds and traces on
``meta`` like any other, and the work grows with ``top_k`` but not with
``experts``. Tokens are dispatched into the buffer by index (a scatter) and
combined back by index (a gather); no expert sees a token not routed to it.
First choices claim slots before second choices, tokens in order. An
assignment beyond its expert's capacity is *dropped*: its share of the FFN
output is zero, so the token goes on through the block's residual path alone;
:attr:`MoeFfn.dropped` counts the dropped assignments of the last forward.

Cost model: the traced ops are the router's product, the top-k, the softmax
of the chosen scores, the slot positions (a cumulative sum), the dispatch scatter, the two batched
expert products at ``capacity`` rows per expert, and the combine gather. Under
balanced routing each expert receives ``top_k * tokens / experts`` tokens, its
expected count; the trace prices exactly that many rows per expert times
``capacity_factor`` (the headroom, computed on padding when routing is
balanced). The routing ops (the top-k, the dispatch and combine by index, and
the integer slot arithmetic) are the latency kind ``routing``
(:mod:`nas.latency.kinds`): data-dependent, they fall back to the CPU on the
ZCU104 (``predictors/zcu104.yaml``), while the experts' products (``baddbmm``)
are priced as linear layers.

The load-balancing loss (Switch Transformer, Sec. 2.2) is
``balance_weight * experts * sum_e f_e * P_e``, with ``f_e`` the fraction of
assignments routed to expert ``e`` and ``P_e`` its mean router probability: 1 x
the weight for a uniform router, ``experts`` x for one that sends every token to
one expert. Each training forward leaves it in :attr:`MoeFfn.auxiliary_loss`;
:func:`auxiliary_loss` sums a model's, and the trainer adds it to the task loss.

Weight sharing: the experts are stacked tensors (``experts x hidden x dim``),
so a supernet's narrower point takes a prefix of the experts, of the hidden
units and of the router's outputs (the declared ``Prefix`` sharing).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import Activation, Layout, create_act, factory_kwargs
from nas.blocks.contract import Prefix
from nas.blocks.ffn import hidden_width
from nas.blocks.registry import register
from nas.errors import ConfigError, NasError

__all__ = ["MoeCfg", "MoeFfn", "Routing", "auxiliary_loss", "routing_task"]


@dataclass(frozen=True)
class MoeCfg(Component):
    """A mixture of ``experts`` MLPs with top-k routing.

    Attributes:
        experts: expert MLPs (E).
        top_k: experts per token, 1 or 2; at most ``experts``.
        ratio: each expert's hidden width, ``ratio * dim``.
        capacity_factor: token slots per expert relative to balanced routing (>= 1 leaves headroom).
        tasks: routers, one per task id (M3ViT's task-conditioned routing); 1 for a single-task model.
        balance_weight: weight of the load-balancing loss added to the training loss.
        act: the experts' activation.
    """

    # Experts, hidden units and router outputs are independent channels: a prefix of each is a narrower MoE.
    sharing = {"w1": Prefix(), "b1": Prefix(), "w2": Prefix(), "b2": Prefix(), "router_weight": Prefix(),
               "router_bias": Prefix()}

    experts: int = 4
    top_k: int = 1
    ratio: float = 4.0
    capacity_factor: float = 1.0
    tasks: int = 1
    balance_weight: float = 0.01
    act: Activation = "gelu"

    def check(self, site: Site) -> None:
        if self.experts < 1:
            raise ConfigError(f"must be >= 1, got {self.experts}", path="experts")
        if self.top_k not in (1, 2):
            raise ConfigError(f"must be 1 or 2, got {self.top_k}", path="top_k")
        if self.top_k > self.experts:
            raise ConfigError(f"{self.top_k} experts per token, but only {self.experts} experts", path="top_k")
        if self.ratio <= 0:
            raise ConfigError(f"must be > 0, got {self.ratio}", path="ratio")
        if self.capacity_factor <= 0:
            raise ConfigError(f"must be > 0, got {self.capacity_factor}", path="capacity_factor")
        if self.tasks < 1:
            raise ConfigError(f"must be >= 1, got {self.tasks}", path="tasks")
        if self.balance_weight < 0:
            raise ConfigError(f"must be >= 0, got {self.balance_weight}", path="balance_weight")


class Routing(NamedTuple):
    """Where each of ``T`` tokens goes; assignments are ordered choice-major (all first choices, then seconds).

    Attributes:
        logits: ``T x E`` router scores.
        experts: ``T x k`` chosen experts, best first.
        gates: ``T x k`` combine weights: the router's probabilities renormalised over the chosen experts
            (the softmax of the chosen logits), so each row sums to 1.
        slots: ``k*T`` buffer row of each assignment (``expert * capacity + position``), or the overflow row
            ``E * capacity`` for a dropped one.
        kept: ``k*T`` whether the assignment found a slot.
        capacity: slots per expert.
    """

    logits: torch.Tensor
    experts: torch.Tensor
    gates: torch.Tensor
    slots: torch.Tensor
    kept: torch.Tensor
    capacity: int


@register("ffn", "moe", MoeCfg)
class MoeFfn(nn.Module):
    """The mixture of experts on tokens of either layout (see the module docstring).

    Attributes:
        task: the router in use (set it with :func:`routing_task`).
        kept: per assignment of the last forward (choice-major), whether it found a slot.
        auxiliary_loss: the weighted load-balancing loss of the last forward in training mode, else None.
    """

    def __init__(self, cfg: MoeCfg, *, dim: int, layout: Layout, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden = hidden_width(dim, cfg.ratio)
        self.cfg = cfg
        self.layout = layout
        self.router_weight = nn.Parameter(torch.empty(cfg.tasks, cfg.experts, dim, **dd))
        self.router_bias = nn.Parameter(torch.empty(cfg.tasks, cfg.experts, **dd))
        self.w1 = nn.Parameter(torch.empty(cfg.experts, hidden, dim, **dd))
        self.b1 = nn.Parameter(torch.empty(cfg.experts, hidden, **dd))
        self.w2 = nn.Parameter(torch.empty(cfg.experts, dim, hidden, **dd))
        self.b2 = nn.Parameter(torch.empty(cfg.experts, dim, **dd))
        self.act = create_act(cfg.act, **dd)
        self.task = 0
        self.kept: torch.Tensor | None = None
        self.auxiliary_loss: torch.Tensor | None = None
        self.reset_parameters()

    @property
    def dropped(self) -> int:
        """Assignments the last forward dropped by capacity (0 before any forward)."""
        return 0 if self.kept is None else int((~self.kept).sum())

    def reset_parameters(self) -> None:
        """``nn.Linear``'s init for each expert and router: uniform within ``1 / sqrt(fan_in)``."""
        with torch.no_grad():
            for weight, bias in ((self.router_weight, self.router_bias), (self.w1, self.b1), (self.w2, self.b2)):
                bound = 1.0 / math.sqrt(weight.shape[-1])
                weight.uniform_(-bound, bound)
                bias.uniform_(-bound, bound)

    def route(self, tokens: torch.Tensor) -> Routing:
        """Route ``T x dim`` tokens with the current task's router.

        The bookkeeping after the top-k is integer arithmetic on expert ids (what a DPU cannot run, see
        :mod:`nas.latency.kinds`), kept apart from the float ops.
        """
        cfg = self.cfg
        count, experts, k = tokens.shape[0], self.w1.shape[0], cfg.top_k
        capacity = max(1, math.ceil(cfg.capacity_factor * k * count / experts))
        logits = F.linear(tokens, self.router_weight[self.task], self.router_bias[self.task])
        top, chosen = logits.topk(k, dim=-1)
        gates = top.softmax(dim=-1)
        expert = chosen.t().reshape(k * count)  # choice-major: first choices claim slots before second choices
        onehot = (expert.unsqueeze(1) == torch.arange(experts, device=tokens.device)).long()
        position = ((onehot.cumsum(dim=0) - 1) * onehot).sum(dim=-1)
        kept = position < capacity
        slots = torch.where(kept, expert * capacity + position, experts * capacity)
        return Routing(logits, chosen, gates, slots, kept, capacity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2) if self.layout == "nchw" else x
        flat = tokens.reshape(-1, tokens.shape[-1])
        routing = self.route(flat)
        out = self._experts(flat, routing)
        self.kept = routing.kept.detach()
        self.auxiliary_loss = self._balance_loss(routing) if self.training else None
        out = out.view_as(tokens)
        return out.transpose(1, 2).reshape_as(x) if self.layout == "nchw" else out

    def _experts(self, flat: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Dispatch by index into the expert buffer, run every expert on its slots, combine by index."""
        count, dim = flat.shape
        experts, k, capacity = self.w1.shape[0], self.cfg.top_k, routing.capacity
        weights = torch.where(routing.kept, routing.gates.t().reshape(k * count), 0.0).unsqueeze(1)
        assigned = flat.expand(k, count, dim).reshape(k * count, dim)
        buffer = flat.new_zeros(experts * capacity + 1, dim).index_add(0, routing.slots, assigned)
        slots = buffer[:-1].view(experts, capacity, dim)
        hidden = self.act(torch.baddbmm(self.b1.unsqueeze(1), slots, self.w1.transpose(1, 2)))
        done = torch.baddbmm(self.b2.unsqueeze(1), hidden, self.w2.transpose(1, 2)).reshape(experts * capacity, dim)
        done = torch.cat([done, done.new_zeros(1, dim)])  # the overflow row: a dropped assignment adds nothing
        return (done.index_select(0, routing.slots) * weights).view(k, count, dim).sum(dim=0)

    def _balance_loss(self, routing: Routing) -> torch.Tensor:
        probs = routing.logits.softmax(dim=-1)
        experts = probs.shape[-1]
        share = F.one_hot(routing.experts, experts).to(probs.dtype).mean(dim=(0, 1))
        return self.cfg.balance_weight * experts * (share * probs.mean(dim=0)).sum()


def auxiliary_loss(module: nn.Module) -> torch.Tensor | None:
    """The sum of the auxiliary losses the MoE layers in ``module`` left in their last forward (None: none)."""
    losses = [sub.auxiliary_loss for sub in module.modules()
              if isinstance(sub, MoeFfn) and sub.auxiliary_loss is not None]
    return torch.stack(losses).sum() if losses else None


@contextmanager
def routing_task(module: nn.Module, task: int) -> Iterator[None]:
    """Route every MoE layer in ``module`` with the router of ``task`` inside the ``with`` block.

    Example:
        >>> with routing_task(model, 1):  # doctest: +SKIP
        ...     segmentation_features = model.forward_features(images)

    Raises:
        NasError: a layer has no router for ``task``.
    """
    layers = [sub for sub in module.modules() if isinstance(sub, MoeFfn)]
    for layer in layers:
        if not 0 <= task < layer.cfg.tasks:
            raise NasError(f"task {task}: the MoE layers have routers for tasks 0..{layer.cfg.tasks - 1}")
    before = [layer.task for layer in layers]
    for layer in layers:
        layer.task = task
    try:
        yield
    finally:
        for layer, old in zip(layers, before, strict=True):
            layer.task = old
