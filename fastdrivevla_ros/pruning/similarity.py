"""Cosine-distance helpers shared by the diversity-based pruners.

DivPrune, Prune2Drive's T-FPS and VLA-Pruner's redundancy filter all run the same max-min
(farthest point / k-center greedy) selection under the cosine distance d(i, j) = 1 - cos(x_i, x_j);
VisPruner's diverse stage uses cosine similarity of the normalised tokens. One implementation
lives here so the methods differ only where their papers differ (which features, which layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastdrivevla_ros.errors import InputError


def unit_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x: [n, D] -> [n, D] float32 rows scaled to unit L2 norm (a zero row stays zero)."""
    if x.ndim != 2:
        raise InputError(f"expected token features [n, D], got shape {tuple(x.shape)}")
    return torch.nn.functional.normalize(x.float(), p=2.0, dim=1, eps=eps)


def cosine_distance(x: torch.Tensor) -> torch.Tensor:
    """x: [n, D] -> [n, n] pairwise cosine distance 1 - cos (float32, diagonal ~0)."""
    u = unit_rows(x)
    return 1.0 - u @ u.T


@dataclass
class DiverseSelection:
    """order: [k] local indices in the order the greedy picked them;
    gain: [k] each pick's distance to the tokens picked before it (the first pick: its
    nearest-neighbour distance); residual: [n] every token's final distance to the picked set
    (0 for picked tokens)."""

    order: torch.Tensor
    gain: torch.Tensor
    residual: torch.Tensor

    def scores(self) -> torch.Tensor:
        """[n] per-token diversity score, higher = kept: picked tokens score their gain, the
        others their distance to the picked set (never above the last gain, by construction)."""
        out = self.residual.clone()
        out[self.order] = self.gain
        return out


def max_min_diverse(x: torch.Tensor, k: int) -> DiverseSelection:
    """Max-min diversity greedy (DivPrune Eq. 3, Prune2Drive `farway_point_sampling`).

    x: [n, D] token features; k: how many to pick (1 <= k <= n).
    Start: the most isolated token, argmax_i min_{j != i} d(i, j). Then repeatedly
    argmax_j min_{s in S} d(s, j) over the tokens not yet picked. Ties go to the lower index
    (torch.argmax returns the first maximum), as in both official implementations.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise InputError(f"cannot pick {k} of {n} tokens")
    dist = cosine_distance(x)
    picked = torch.zeros(n, dtype=torch.bool, device=x.device)
    order = torch.empty(k, dtype=torch.long, device=x.device)
    gain = torch.empty(k, dtype=dist.dtype, device=x.device)
    nearest = dist.clone()
    nearest.fill_diagonal_(float("inf"))
    nearest = nearest.min(dim=1).values if n > 1 else torch.zeros(1, device=x.device)
    first = int(torch.argmax(nearest))
    order[0], gain[0] = first, nearest[first]
    picked[first] = True
    min_dist = dist[first].clone()        # min over picked rows, updated incrementally
    for t in range(1, k):
        candidates = min_dist.masked_fill(picked, float("-inf"))
        j = int(torch.argmax(candidates))
        order[t], gain[t] = j, candidates[j]
        picked[j] = True
        min_dist = torch.minimum(min_dist, dist[j])
    residual = min_dist.masked_fill(picked, 0.0)
    return DiverseSelection(order, gain, residual)
