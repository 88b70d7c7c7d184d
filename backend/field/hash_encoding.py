"""Multiresolution hash encoding (Mueller et al. 2022, "Instant Neural Graphics Primitives", Sec. 3).

Two implementations behind one signature:

* ``"tcnn"``: tiny-cuda-nn's fused CUDA kernel (imported only in ``tcnn_backend.py``);
* ``"torch"``: the pure-PyTorch twin, the reference that CPU tests check by hand.

The twin follows tiny-cuda-nn's grid conventions exactly (so the two agree given the same table):

* level l has ``scale_l = base_resolution * per_level_scale**l - 1`` and
  ``resolution_l = ceil(scale_l) + 1`` vertices per axis (paper eq. 2-3, tcnn's off-by-one);
* a point x in [0, 1]^3 lies at grid position ``x * scale_l + 0.5``;
* level l owns ``size_l = next_multiple_of_8(min(T, resolution_l**3))`` table rows;
  coarse levels whose grid fits (``resolution_l**3 <= T``) index densely
  (``i + j * res + k * res**2``), fine ones hash (paper eq. 4):
  ``(i * 1) xor (j * 2654435761) xor (k * 805459861)``; both taken ``mod size_l``;
* the 8 corner features are trilinearly interpolated; the levels are concatenated, so the output is
  ``[N, L * F]`` with level-major order (level 0's F features first);
* table entries are initialised from U(-1e-4, 1e-4) (paper Sec. 4).

Hashing in int64 gives the same low bits as tcnn's uint32 wrap-around, and every table size is a
power of two (hashed levels) or smaller than the product (dense levels), so the indices are equal.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from backend.field import tcnn_backend

PRIMES = (1, 2654435761, 805459861)
"""Per-axis primes of the spatial hash (paper eq. 4; the first is 1 for cache coherence)."""

IMPLEMENTATIONS = ("tcnn", "torch")

_warned_fallback = False


def growth_factor(base_resolution: int, max_resolution: int, num_levels: int) -> float:
    """Per-level scale b so that level L-1 reaches ``max_resolution`` (paper eq. 3)."""
    if num_levels == 1:
        return 1.0
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (num_levels - 1))


class HashEncoding(nn.Module):
    """Multiresolution hash grid: ``forward(x [N, 3] in [0, 1]^3) -> [N, num_levels * features_per_level]``.

    Inputs outside [0, 1]^3 are clamped (the field zeroes their density anyway).
    ``implementation="tcnn"`` falls back to ``"torch"`` with one warning when tinycudann or CUDA is
    missing; ``self.implementation`` says which one runs.
    """

    def __init__(
        self,
        num_levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        per_level_scale: float | None = None,
        implementation: Literal["tcnn", "torch"] = "torch",
    ) -> None:
        super().__init__()
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"HashEncoding implementation {implementation!r} is unknown (allowed: {IMPLEMENTATIONS})")
        if num_levels < 1 or features_per_level < 1 or not 2 <= log2_table_size <= 30 or base_resolution < 1:
            raise ValueError(
                "HashEncoding needs num_levels >= 1, features_per_level >= 1, 2 <= log2_table_size <= 30 and "
                f"base_resolution >= 1; got {num_levels}, {features_per_level}, {log2_table_size}, {base_resolution}"
            )
        if per_level_scale is None:
            per_level_scale = growth_factor(base_resolution, max_resolution, num_levels)
        self.num_levels = num_levels
        self.features_per_level = features_per_level
        self.log2_table_size = log2_table_size
        self.base_resolution = base_resolution
        self.per_level_scale = float(per_level_scale)
        self.out_dim = num_levels * features_per_level

        table_size = 2**log2_table_size
        levels = torch.arange(num_levels, dtype=torch.float32)
        # float32 like tcnn, so that both pick the same scale to the last bit.
        scales = torch.exp2(levels * math.log2(self.per_level_scale)) * base_resolution - 1.0
        resolutions = torch.ceil(scales).long() + 1
        dense = resolutions**3 <= table_size
        sizes = torch.where(dense, resolutions**3, torch.full_like(resolutions, table_size))
        sizes = (sizes + 7) // 8 * 8
        offsets = torch.cumsum(sizes, 0) - sizes
        self.register_buffer("scales", scales, persistent=False)  # [L]
        self.register_buffer("resolutions", resolutions, persistent=False)  # [L]
        self.register_buffer("dense", dense, persistent=False)  # [L] bool
        self.register_buffer("sizes", sizes, persistent=False)  # [L]
        self.register_buffer("offsets", offsets, persistent=False)  # [L]
        num_rows = int(sizes.sum())
        self._num_dense = int(dense.sum())
        if not bool(dense[: self._num_dense].all()):  # resolutions grow, so dense levels come first
            raise ValueError("HashEncoding needs non-decreasing resolutions (per_level_scale >= 1)")
        res_d = resolutions[: self._num_dense]
        strides = torch.stack([torch.ones_like(res_d), res_d, res_d * res_d], dim=-1)  # [Ld, 3]
        bits = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.long)  # [8, 3]
        self.register_buffer("_dense_strides", strides, persistent=False)
        self.register_buffer("_dense_corner_offsets", (bits[None] * strides[:, None]).sum(-1), persistent=False)  # [Ld, 8]
        # int32 copies for corner_rows, usable while every row index fits in int32 (a table of up to
        # 2^31 rows: always on the presets; larger ones take the reference path).
        self._rows_fit_int32 = int(sizes.sum()) < 2**31
        self.register_buffer("_dense_strides32", strides.to(torch.int32), persistent=False)  # [Ld, 3]
        self.register_buffer("_dense_corner_offsets32", self._dense_corner_offsets.to(torch.int32), persistent=False)
        self.register_buffer("_sizes32", sizes.to(torch.int32), persistent=False)  # [L]
        self.register_buffer("_offsets32", offsets.to(torch.int32), persistent=False)  # [L]
        # int32 views of the primes (2654435761 > 2^31 becomes negative; the low bits are unchanged).
        primes32 = [p - 2**32 if p >= 2**31 else p for p in PRIMES]
        self.register_buffer("_primes", torch.tensor(primes32, dtype=torch.int32), persistent=False)  # [3]

        self.implementation = implementation
        self.reference = False
        """True: the torch twin runs :meth:`_forward_reference` (same numbers, the pre-issue-18 cost;
        bench/reconstruct.py measures both)."""
        self._tcnn: nn.Module | None = None
        if implementation == "tcnn":
            tcnn, why = tcnn_backend.load_tcnn()
            if tcnn is None:
                global _warned_fallback
                if not _warned_fallback:
                    warnings.warn(f"HashEncoding: tcnn requested but {why}; using the pure-PyTorch twin", stacklevel=2)
                    _warned_fallback = True
                self.implementation = "torch"
            else:
                self._tcnn = tcnn_backend.make_tcnn_hash_grid(
                    num_levels, features_per_level, log2_table_size, base_resolution, self.per_level_scale
                )
        if self._tcnn is None:
            self.table = nn.Parameter(torch.empty(num_rows, features_per_level).uniform_(-1e-4, 1e-4))  # [rows, F]

    def rows_up_to(self, resolution: float) -> Tensor:  # -> [rows] bool
        """Rows of the table that belong to levels of at most ``resolution`` cells across the box."""
        level = torch.repeat_interleave(torch.arange(self.num_levels, device=self.sizes.device), self.sizes)
        return (self.resolutions <= resolution)[level]

    def freeze_levels_above(self, resolution: float) -> torch.utils.hooks.RemovableHandle:
        """Zero the gradient of every level finer than ``resolution`` cells across the box, so an
        optimiser leaves those levels as they are (Adam's update of a zero gradient from zero moments
        is zero). The tcnn grid's flat parameters are laid out level by level with the same offsets
        (``sizes`` mirrors tcnn's rounding), so one mask serves both implementations."""
        keep = self.rows_up_to(resolution).to(torch.float32)[:, None]  # [rows, 1]
        param = self._tcnn.params if self._tcnn is not None else self.table

        def mask(grad: Tensor) -> Tensor:
            return (grad.view(-1, self.features_per_level) * keep.to(grad.device, grad.dtype)).view(grad.shape)

        return param.register_hook(mask)

    def forward(self, x: Tensor) -> Tensor:  # x: [N, 3] in [0, 1]^3 -> [N, L * F]
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"HashEncoding expects points of shape [N, 3], got {tuple(x.shape)}")
        x = x.clamp(0.0, 1.0)
        if self._tcnn is not None:
            return self._tcnn(x).float()
        return self._forward_torch(x)

    def corner_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Table rows and trilinear weights of the 8 corners per level: ([N, L, 8] long, [N, L, 8]).

        Corner c is the upper neighbour along axis d when bit d of c is set (x fastest). Vectorised
        over levels; the dense and the hashed levels are computed as two blocks.
        """
        n = x.shape[0]
        pos = x[:, None, :] * self.scales[None, :, None] + 0.5  # [N, L, 3]
        cell_f = torch.floor(pos)
        frac = pos - cell_f  # [N, L, 3]
        cell = cell_f.to(torch.int32)
        nd = self._num_dense
        blocks = []
        if nd > 0:
            # Dense: row = i + j * res + k * res^2; the 8 corners add a constant per level.
            base = (cell[:, :nd].long() * self._dense_strides).sum(-1)  # [N, Ld]
            rows = base[:, :, None] + self._dense_corner_offsets  # [N, Ld, 8]
            size = self.sizes[:nd, None]
            # rows < 2 * size always (a corner lies at most one vertex past the grid): one
            # conditional subtraction is the modulo.
            rows = torch.where(rows >= size, rows - size, rows)
            blocks.append(rows + self.offsets[:nd, None])
        if nd < self.num_levels:
            # Hashed: int32 products wrap like tcnn's uint32 ones, and the table size is a power of
            # two, so masking the low bits of the xor gives tcnn's row. (c + 1) * p = c * p + p.
            h0 = cell[:, nd:] * self._primes  # [N, Lh, 3]
            h = torch.stack([h0, h0 + self._primes], dim=-1)  # [N, Lh, 3, 2]
            rows = h[:, :, 0, None, None, :] ^ h[:, :, 1, None, :, None] ^ h[:, :, 2, :, None, None]
            rows = rows.reshape(n, self.num_levels - nd, 8) & (2**self.log2_table_size - 1)
            blocks.append(rows.long() + self.offsets[nd:, None])
        idx = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        w = torch.stack([1.0 - frac, frac], dim=-1)  # [N, L, 3, 2]
        wxy = w[:, :, 1, :, None] * w[:, :, 0, None, :]  # [N, L, 2 (y), 2 (x)]
        weights = (w[:, :, 2, :, None, None] * wxy[:, :, None]).reshape(n, self.num_levels, 8)
        return idx, weights

    def corner_rows(self, x: Tensor) -> tuple[Tensor, Tensor]:  # x: [N, 3] -> ([L, N, 8] int32, [L, N, 8])
        """Fast twin of :meth:`corner_indices`, **level-major**: ``rows[l, n, c]`` and
        ``weights[l, n, c]`` equal the reference's ``idx[n, l, c]`` and ``weights[n, l, c]``.

        Why level-major: a gather (and its backward, a scatter-add) then walks one level's table
        (at most 2^T rows, 1 MB on the CPU preset) at a time instead of jumping between all L levels
        for every point (9 MB), so it stays in the cache: ~2x faster on the CPU. Every intermediate
        is int32 (half the memory traffic of int64), the per-axis factors are combined by
        broadcasting 2 x 2 x 2, and both blocks are written into one preallocated output instead of
        concatenated. The reference is kept because its long arithmetic is easy to check by hand.
        """
        n, num_levels, nd = x.shape[0], self.num_levels, self._num_dense
        pos = x[None, :, :] * self.scales[:, None, None] + 0.5  # [L, N, 3], the reference's operations
        cell_f = torch.floor(pos)
        frac = pos.sub_(cell_f)  # [L, N, 3]
        cell = cell_f.to(torch.int32)
        rows = torch.empty(num_levels, n, 8, dtype=torch.int32, device=x.device)
        if nd > 0:
            c, s = cell[:nd], self._dense_strides32[:, None, :]  # [Ld, N, 3], [Ld, 1, 3]
            base = c[..., 0] + c[..., 1] * s[..., 1] + c[..., 2] * s[..., 2]  # [Ld, N]
            r = base[:, :, None] + self._dense_corner_offsets32[:, None, :]  # [Ld, N, 8]
            size = self._sizes32[:nd, None, None]
            rows[:nd] = torch.where(r >= size, r - size, r) + self._offsets32[:nd, None, None]
        if nd < num_levels:
            h0 = cell[nd:] * self._primes  # [Lh, N, 3]
            h1 = h0 + self._primes
            hx, hy, hz = (torch.stack([h0[..., d], h1[..., d]], dim=-1) for d in range(3))  # [Lh, N, 2] each
            r = (hz[..., :, None, None] ^ (hy[..., :, None] ^ hx[..., None, :])[..., None, :, :]).reshape(num_levels - nd, n, 8)
            r &= 2**self.log2_table_size - 1
            rows[nd:] = r + self._offsets32[nd:, None, None]
        w0 = 1.0 - frac
        wx, wy, wz = (torch.stack([w0[..., d], frac[..., d]], dim=-1) for d in range(3))  # [L, N, 2] each
        # Same association as the reference: z * (y * x).
        weights = (wz[..., :, None, None] * (wy[..., :, None] * wx[..., None, :])[..., None, :, :]).reshape(num_levels, n, 8)
        return rows, weights

    def _forward_torch(self, x: Tensor) -> Tensor:
        if self.reference or not self._rows_fit_int32:
            return self._forward_reference(x)
        n, num_levels, f = x.shape[0], self.num_levels, self.features_per_level
        rows, weights = self.corner_rows(x)  # level-major
        flat = rows.reshape(-1).long()
        if f == 2:
            # Two float32 features are one complex64: a 1-D gather of 8-byte elements is ~4x faster
            # on the CPU than index_select of [rows, 2] (which copies row by row), and its backward
            # (a 1-D complex index_add) ~1.5x faster. view_as_complex is a view, so the gradient
            # still lands in ``self.table`` (and its hooks, freeze_levels_above, still apply).
            feats = torch.view_as_real(torch.view_as_complex(self.table).index_select(0, flat))
        else:
            feats = self.table.index_select(0, flat)
        feats = feats.reshape(num_levels * n, 8, f)
        # Batched matmul: ~5x faster on the CPU than fancy indexing + mul + sum.
        out = torch.bmm(weights.reshape(num_levels * n, 1, 8).to(feats.dtype), feats)  # [L * N, 1, F]
        return out.reshape(num_levels, n, f).transpose(0, 1).reshape(n, self.out_dim)  # level-major -> [N, L * F]

    def _forward_reference(self, x: Tensor) -> Tensor:
        """The reference lookup (long rows from :meth:`corner_indices`, a 2-D gather); tests compare
        :meth:`_forward_torch` with it."""
        n = x.shape[0]
        idx, weights = self.corner_indices(x)
        feats = self.table.index_select(0, idx.reshape(-1)).reshape(n * self.num_levels, 8, self.features_per_level)
        out = torch.bmm(weights.reshape(n * self.num_levels, 1, 8).to(feats.dtype), feats)  # [N * L, 1, F]
        return out.reshape(n, self.out_dim)
