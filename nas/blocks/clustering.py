"""Token clustering and reconstruction layers around the later blocks of a token stage.

Paper: "Expediting Large-Scale Vision Transformer for Dense Prediction without
Fine-tuning", Liang, Yuan, Ding, Luo, Lin, Jia, Zhang, Zhang and Hu, NeurIPS 2022,
arXiv:2210.01035. Two layers without parameters are inserted into a trained
isotropic model: after ``depth`` blocks a *token clustering* layer turns the
``H x W`` tokens into a ``grid x grid`` map of cluster centres, the remaining
blocks run on the centres (their cost falls with the token count), and a *token
reconstruction* layer at the stage's end gives every original token back as a
mix of the refined centres it was nearest to. Nothing is trained, so an Arch
with clustering is a trained model's inference variant (the supernet refuses it).

* Clustering: centres start as the ``grid x grid`` average pool of the map, then
  ``iterations`` soft k-means steps: each token is assigned among the
  ``window x window`` centres around its own position by a softmax of its squared
  distance to them over ``temperature``, and each centre becomes the assignment-weighted
  mean of its tokens. Distances are taken between L2-normalised features, so one
  temperature suits every depth and width (a choice of ours).
* Reconstruction: token ``i`` is rebuilt from its ``neighbours`` nearest centres (as
  they were when clustered), weighted by a softmax of the same distances, applied
  to the centres as the blocks left them.

With ``grid`` equal to the map's side the average pool is the identity and every
assignment is (to the temperature's precision) a token's own centre, so the stage
computes what it computes without clustering. Class tokens bypass both layers.
The layers are the unit :class:`ClusteredRun` together with the blocks they
enclose, because reconstruction needs what clustering saw; ``nas.cost`` traces
that unit whole, at the reduced token count. The run loads the trained model's
weights under their own names (``stages.0.7.fn.qkv.weight``), so a checkpoint of
the model without clustering loads into the model with it as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import TokenClustering

__all__ = ["TokenClusterer", "ClusteredRun", "window_mask"]

_TINY = 1e-12


def window_mask(size: tuple[int, int], grid: int, window: int) -> torch.Tensor:
    """``(H*W, grid**2)`` additive mask: 0 where a centre is within ``window // 2`` centres of the token's own."""
    height, width = size
    rows = torch.arange(height) * grid // height
    cols = torch.arange(width) * grid // width
    own_row = rows[:, None].expand(height, width).flatten()
    own_col = cols[None, :].expand(height, width).flatten()
    centre = torch.arange(grid)
    near_row = (own_row[:, None] - centre[None, :]).abs() <= window // 2
    near_col = (own_col[:, None] - centre[None, :]).abs() <= window // 2
    near = near_row[:, :, None] & near_col[:, None, :]
    return torch.zeros(near.shape).masked_fill(~near, float("-inf")).flatten(1)


def _squared_distances(tokens: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``(B, N, M)`` squared distances between L2-normalised tokens and centres."""
    return 2.0 - 2.0 * F.normalize(tokens, dim=-1) @ F.normalize(centres, dim=-1).transpose(-1, -2)


class TokenClusterer(nn.Module):
    """``(B, H*W, C)`` tokens -> ``(B, grid**2, C)`` centres, and the ``(B, H*W, grid**2)`` reconstruction weights."""

    def __init__(self, clustering: TokenClustering, size: tuple[int, int], *, device: Any = None):
        super().__init__()
        self.size = size
        self.grid = clustering.grid
        self.iterations = clustering.iterations
        self.temperature = clustering.temperature
        self.neighbours = clustering.neighbours
        self.register_buffer("mask", window_mask(size, clustering.grid, clustering.window).to(device),
                             persistent=False)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, channels = tokens.shape
        grid_map = tokens.transpose(1, 2).reshape(batch, channels, *self.size)
        centres = F.adaptive_avg_pool2d(grid_map, self.grid).flatten(2).transpose(1, 2)
        for _ in range(self.iterations):
            assign = (-_squared_distances(tokens, centres) / self.temperature + self.mask).softmax(-1)
            # a centre no token chose (every weight underflowed) goes to 0 rather than 0 / 0
            centres = (assign.transpose(1, 2) @ tokens) / assign.sum(1).clamp_min(_TINY).unsqueeze(-1)
        nearest, index = _squared_distances(tokens, centres).topk(self.neighbours, dim=-1, largest=False)
        weights = self.mask.new_zeros(batch, *self.mask.shape).scatter(
            -1, index, (-nearest / self.temperature).softmax(-1))
        return centres, weights


class ClusteredRun(nn.Module):
    """Clustering, the enclosed blocks on ``prefix + grid**2`` tokens, reconstruction: ``(B, P + H*W, C)`` in and out.

    Args:
        clustering: the stage's settings.
        blocks: the built blocks from ``clustering.depth`` on (with any layout conversions), in order.
        size: the token map clustering takes in.
        prefix_tokens: class tokens in front, passed to the blocks unchanged.
    """

    def __init__(self, clustering: TokenClustering, blocks: list[nn.Module], *, size: tuple[int, int],
                 prefix_tokens: int, device: Any = None):
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.cluster = TokenClusterer(clustering, size, device=device)
        self.blocks = nn.Sequential(*blocks)
        self.register_load_state_dict_pre_hook(_plain_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, tokens = x[:, :self.prefix_tokens], x[:, self.prefix_tokens:]
        centres, weights = self.cluster(tokens)
        out = self.blocks(torch.cat([prefix, centres], dim=1))
        return torch.cat([out[:, :self.prefix_tokens], weights @ out[:, self.prefix_tokens:]], dim=1)


def _plain_names(run: ClusteredRun, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load hook: move a model-without-clustering's weights to the run's names, in place.

    In that model the enclosed units sit beside the run's own place in the stage (``stages.0.4``,
    ``stages.0.5``, ...) where this model has ``stages.0.4.blocks.0``, ``stages.0.4.blocks.1``, ...
    A state dict that already has the run's names is left alone.
    """
    parent, _, own = prefix.rstrip(".").rpartition(".")
    if not own.isdigit() or any(key.startswith(f"{prefix}blocks.") for key in state_dict):
        return
    for offset in range(len(run.blocks)):
        plain = f"{parent}.{int(own) + offset}." if parent else f"{int(own) + offset}."
        for key in [key for key in state_dict if key.startswith(plain)]:
            state_dict[f"{prefix}blocks.{offset}.{key[len(plain):]}"] = state_dict.pop(key)
