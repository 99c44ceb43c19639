"""Which traced ops run inside one ``scaled_dot_product_attention`` call.

On ``meta``, where :mod:`nas.cost` traces, :func:`torch.nn.functional.scaled_dot_product_attention` runs its
math path: the ops it dispatches are a scaling, a ``bmm`` writing the ``N x N`` scores, an optional mask add,
a softmax and a second ``bmm``. A runtime may instead run the whole call as one fused kernel that never
writes the scores (eager PyTorch on a CPU does, for 4-D inputs). The trace cannot see that kernel, so it
marks the ops each call dispatches with the call's number (:attr:`nas.cost.Op.attention_call`), and a latency
setting whose runtime fuses the call prices them as one kernel (:mod:`nas.latency.fused_attention`).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["AttentionCalls"]


class AttentionCalls(TorchFunctionMode):
    """While active, ``current`` is the number (from 1, in call order) of the attention call running, else 0."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is not F.scaled_dot_product_attention or self.current:
            return func(*args, **(kwargs or {}))
        self.count += 1
        self.current = self.count
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.current = 0
