"""Where to evaluate the field along each ray: one interface, a CUDA path and its pure-PyTorch twin.

* :class:`OccupancyGridSampler` wraps nerfacc's ``OccGridEstimator`` (CUDA kernels only).
* :class:`StratifiedSampler` is the twin that runs anywhere: ``num_samples`` stratified intervals in
  the ray/aabb intersection, minus those in cells of a coarse occupancy grid marked empty (the
  grid is maintained exactly like nerfacc's: EMA-max of density * step over jittered cell points),
  minus those behind an opaque surface or too transparent when a ``sigma_fn`` is given
  (nerfacc's ``early_stop_eps`` and ``alpha_thre``, computed with no-grad density passes that march
  front to back and stop at opaque surfaces: the samples nerfacc keeps, fewer densities evaluated).

Both return :class:`~backend.render.rays.RaySamples`, packed (sorted by ray), with t in the units of the ray direction
(the planar depth for rays from rays.py). Both are ``nn.Module``s: the occupancy grid is part of
``state_dict()``, so a checkpoint resumes with the same grid. Randomness comes from the
``generator`` passed to ``sample``/``update`` on the twin (so a resumed fit replays it), from the
global CUDA RNG in nerfacc.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from backend.render.rays import RaySamples, ray_aabb_intersect
from backend.render.weights import render_weight_from_density_torch

SigmaFn = Callable[[Tensor], Tensor]  # points [M, 3] -> density [M]


class Sampler(nn.Module):
    """Interface: ``sample(rays_o [N, 3], rays_d [N, 3], ...) -> RaySamples``; ``update`` refreshes state."""

    def sample(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        *,
        sigma_fn: SigmaFn | None = None,
        stratified: bool = False,
        generator: torch.Generator | None = None,
    ) -> RaySamples:
        raise NotImplementedError

    def update(self, step: int, density_fn: SigmaFn, generator: torch.Generator | None = None) -> None:
        """Refresh the occupancy grid from the field (no-op for samplers without one)."""

    def settled_within(self, updates: int) -> bool:
        """True when ``updates`` more grid updates cannot change what is sampled, whatever the field
        does: every cell is occupied and its EMA value (each update multiplies it by at least
        ``ema_decay``) stays above the occupancy threshold. False for samplers that cannot tell."""
        return False


class StratifiedSampler(Sampler):
    """Pure-PyTorch sampler: stratified samples in the aabb with nerfacc-style occupancy skipping.

    ``occupancy_resolution=0`` disables the grid (every interval is kept).
    """

    def __init__(
        self,
        aabb: Tensor,  # [2, 3]
        num_samples: int = 64,
        occupancy_resolution: int = 64,
        occupancy_threshold: float = 0.01,
        ema_decay: float = 0.95,
        update_every: int = 16,
        warmup_steps: int = 256,
        alpha_thre: float = 1e-3,
        early_stop_eps: float = 1e-4,
        prune_chunk: int = 2,
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb.detach().clone().float())
        # Samples per ray evaluated per round of the front-to-back pruning (0 = one pass over all).
        self.prune_chunk = prune_chunk
        self.num_samples = num_samples
        self.resolution = occupancy_resolution
        self.occupancy_threshold = occupancy_threshold
        self.ema_decay = ema_decay
        self.update_every = update_every
        self.warmup_steps = warmup_steps
        self.alpha_thre = alpha_thre
        self.early_stop_eps = early_stop_eps
        # Interval length of a diagonal ray: turns density into the grid's opacity (nerfacc's
        # render_step_size).
        self.step_size = float(torch.linalg.norm(self.aabb[1] - self.aabb[0])) / num_samples
        r = max(occupancy_resolution, 1)
        # Everything counts as occupied until the first update fills the grid.
        self.register_buffer("occupancy", torch.zeros((r, r, r)))  # [R, R, R] EMA of density * step
        self.register_buffer("binary", torch.ones((r, r, r), dtype=torch.bool))  # [R, R, R]

    # ---- sampling -------------------------------------------------------------------------------

    def sample(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        *,
        sigma_fn: SigmaFn | None = None,
        stratified: bool = False,
        generator: torch.Generator | None = None,
    ) -> RaySamples:
        n, s = rays_o.shape[0], self.num_samples
        t_near, t_far, hit = ray_aabb_intersect(rays_o, rays_d, self.aabb)
        dt = torch.where(hit, (t_far - t_near) / s, torch.zeros_like(t_near))  # [N]
        k = torch.arange(s, device=rays_o.device, dtype=rays_o.dtype)
        if stratified:
            # One offset per ray shifts its whole comb of intervals (nerfacc's stratified marching),
            # the last interval is clipped at t_far.
            offset = torch.rand(n, 1, device=rays_o.device, generator=generator)
        else:
            offset = torch.zeros(n, 1, device=rays_o.device)
        t_starts = t_near[:, None] + dt[:, None] * (k[None] + offset)  # [N, S]
        t_ends = torch.minimum(t_starts + dt[:, None], t_far[:, None])
        t_starts = torch.where(k[None] == 0, t_near[:, None], t_starts)  # first interval starts at t_near
        keep = hit[:, None].expand(n, s)
        if self.resolution > 0:
            mid = 0.5 * (t_starts + t_ends)
            pts = rays_o[:, None, :] + rays_d[:, None, :] * mid[..., None]  # [N, S, 3]
            keep = keep & self._occupied(pts.reshape(-1, 3)).reshape(n, s)
        ray_idx, sample_idx = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by ray
        samples = RaySamples(t_starts[ray_idx, sample_idx], t_ends[ray_idx, sample_idx], ray_idx, n)
        if sigma_fn is not None and ray_idx.numel() > 0 and (self.alpha_thre > 0 or self.early_stop_eps > 0):
            samples = self._prune(samples, rays_o, rays_d, sigma_fn)
        return samples

    @torch.no_grad()
    def _prune(self, samples: RaySamples, rays_o: Tensor, rays_d: Tensor, sigma_fn: SigmaFn) -> RaySamples:
        """Drop samples that cannot contribute: transmittance below eps or alpha below threshold.

        Marches front to back over the rays still alive: the next ``prune_chunk`` samples of each
        in the first round, then up to twice as many each round while a round's densities stay
        within the first round's (the rays left after the first surfaces are few, and a round's
        fixed cost is larger than its densities': a few rays get long chunks, many keep short
        ones, so few densities behind a surface are wasted), and stops evaluating a
        ray once its transmittance has fallen below ``early_stop_eps``: every later sample of that
        ray has a smaller transmittance and would be dropped anyway, so its density is never
        needed. The kept samples are those of :meth:`_prune_reference` (which evaluates the density
        at every sample, like nerfacc); only float64 rounding of the transmittance separates the
        two, and on an opaque object this skips roughly the samples behind the first surface.
        A round indexes the alive rays' next samples directly (each ray's samples are contiguous,
        packed), so its cost follows the rays alive, not all samples.
        """
        if self.early_stop_eps <= 0 or self.prune_chunk <= 0:
            return self._prune_reference(samples, rays_o, rays_d, sigma_fn)
        ri, n_rays, m = samples.ray_indices, samples.n_rays, samples.ray_indices.numel()
        device = ri.device
        counts = torch.bincount(ri, minlength=n_rays)
        first = torch.cumsum(counts, 0) - counts  # [n_rays] index of each ray's first sample
        rays = torch.nonzero(counts > 0).squeeze(1)  # [R] alive rays
        next_sample, left = first[rays], counts[rays]  # [R] each alive ray's next sample, and how many remain
        sigmas = torch.zeros(m, device=device, dtype=rays_o.dtype)
        evaluated = torch.zeros(m, device=device, dtype=torch.bool)
        optical_depth = torch.zeros(n_rays, device=device, dtype=torch.float64)  # [n_rays]
        limit = -torch.log(torch.tensor(self.early_stop_eps, dtype=torch.float64)).item()  # T < eps <=> depth > limit
        budget = self.prune_chunk * rays.numel()  # densities per round
        chunk = self.prune_chunk
        while rays.numel() > 0:
            k = torch.arange(chunk, device=device)
            take = k[None, :] < left[:, None]  # [R, chunk]
            sel = (next_sample[:, None] + k[None, :])[take]  # row-major: still sorted by ray
            r = ri[sel]
            t_mid = 0.5 * (samples.t_starts[sel] + samples.t_ends[sel])
            sig = sigma_fn(rays_o[r] + rays_d[r] * t_mid[:, None])
            sigmas[sel] = sig
            evaluated[sel] = True
            optical_depth.index_add_(0, r, (sig * (samples.t_ends[sel] - samples.t_starts[sel])).double())
            next_sample, left = next_sample + chunk, left - chunk
            alive = (left > 0) & (optical_depth[rays] <= limit)
            rays, next_sample, left = rays[alive], next_sample[alive], left[alive]
            chunk = min(2 * chunk, max(self.prune_chunk, budget // max(rays.numel(), 1)))
        sub = torch.nonzero(evaluated).squeeze(1)  # per ray a prefix of its samples: still packed
        _, trans, alphas = render_weight_from_density_torch(
            samples.t_starts[sub], samples.t_ends[sub], sigmas[sub], ri[sub], n_rays
        )
        keep = sub[(trans >= self.early_stop_eps) & (alphas >= self.alpha_thre)]
        return RaySamples(samples.t_starts[keep], samples.t_ends[keep], ri[keep], n_rays)

    @torch.no_grad()
    def _prune_reference(self, samples: RaySamples, rays_o: Tensor, rays_d: Tensor, sigma_fn: SigmaFn) -> RaySamples:
        """The reference pruning: the density at every sample in one pass (nerfacc's order of work)."""
        t_mid = 0.5 * (samples.t_starts + samples.t_ends)
        ri = samples.ray_indices
        sigmas = sigma_fn(rays_o[ri] + rays_d[ri] * t_mid[:, None])
        _, trans, alphas = render_weight_from_density_torch(
            samples.t_starts, samples.t_ends, sigmas, ri, samples.n_rays
        )
        keep = (trans >= self.early_stop_eps) & (alphas >= self.alpha_thre)
        return RaySamples(samples.t_starts[keep], samples.t_ends[keep], ri[keep], samples.n_rays)

    def _cell_of(self, pts: Tensor) -> tuple[Tensor, Tensor]:  # [M, 3] -> (cell [M, 3] long, inside [M])
        u = (pts - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        cell = (u * self.resolution).long().clamp(0, self.resolution - 1)
        return cell, inside

    def _occupied(self, pts: Tensor) -> Tensor:  # [M, 3] -> [M] bool
        cell, inside = self._cell_of(pts)
        return self.binary[cell[:, 0], cell[:, 1], cell[:, 2]] & inside

    # ---- occupancy grid ---------------------------------------------------------------------------

    @torch.no_grad()
    def update(self, step: int, density_fn: SigmaFn, generator: torch.Generator | None = None) -> None:
        """Every ``update_every`` steps: EMA-max of density * step_size at a jittered point per cell.

        During warm-up every cell is evaluated; afterwards a random quarter of the cells plus a
        random quarter of the occupied ones (nerfacc's schedule).
        """
        if self.resolution <= 0 or step % self.update_every != 0:
            return
        r = self.resolution
        device = self.occupancy.device
        n_cells = r**3
        if step < self.warmup_steps:
            cells = torch.arange(n_cells, device=device)
        else:
            rand = torch.randint(0, n_cells, (n_cells // 4,), device=device, generator=generator)
            occ = torch.nonzero(self.binary.reshape(-1)).squeeze(1)
            if occ.numel() > 0:
                pick = torch.randint(0, occ.numel(), (n_cells // 4,), device=device, generator=generator)
                rand = torch.cat([rand, occ[pick]])
            cells = rand
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], dim=-1)
        jitter = torch.rand(ijk.shape, device=device, generator=generator)
        u = (ijk.float() + jitter) / r
        pts = self.aabb[0] + u * (self.aabb[1] - self.aabb[0])
        dens = torch.cat([density_fn(c) for c in pts.split(65536)]) * self.step_size
        flat = self.occupancy.view(-1)
        decayed = flat[cells] * self.ema_decay
        flat.index_put_((cells,), torch.maximum(decayed, dens))
        # Cells not visited keep their value; the threshold follows nerfacc: min(mean, occ_thre).
        thre = min(float(self.occupancy.clamp(min=0).mean()), self.occupancy_threshold)
        self.binary.copy_(self.occupancy > thre)

    def occupancy_fraction(self) -> float:
        return float(self.binary.float().mean())

    def settled_within(self, updates: int) -> bool:
        if self.resolution <= 0:
            return True  # no grid: nothing to update
        # update() sets occupancy = max(decay * old, new) >= decay * old on every visited cell and
        # binary = occupancy > min(mean, occupancy_threshold) <= occupancy_threshold.
        floor = float(self.occupancy.min()) * self.ema_decay ** max(updates, 0)
        return bool(self.binary.all()) and floor > self.occupancy_threshold


class OccupancyGridSampler(Sampler):
    """nerfacc's ``OccGridEstimator`` (CUDA only) behind the :class:`Sampler` interface.

    Same meaning of every argument as :class:`StratifiedSampler`; ``num_samples`` sets the marching
    step (aabb diagonal / num_samples), so a ray through the whole box takes num_samples steps.
    """

    def __init__(
        self,
        aabb: Tensor,
        num_samples: int = 64,
        occupancy_resolution: int = 128,
        occupancy_threshold: float = 0.01,
        ema_decay: float = 0.95,
        update_every: int = 16,
        warmup_steps: int = 256,
        alpha_thre: float = 1e-3,
        early_stop_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        import nerfacc

        self.estimator = nerfacc.OccGridEstimator(roi_aabb=aabb.reshape(-1).tolist(), resolution=occupancy_resolution)
        self.step_size = float(torch.linalg.norm(aabb[1] - aabb[0])) / num_samples
        self.occupancy_threshold = occupancy_threshold
        self.ema_decay = ema_decay
        self.update_every = update_every
        self.warmup_steps = warmup_steps
        self.alpha_thre = alpha_thre
        self.early_stop_eps = early_stop_eps

    def sample(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        *,
        sigma_fn: SigmaFn | None = None,
        stratified: bool = False,
        generator: torch.Generator | None = None,
    ) -> RaySamples:
        if not rays_o.is_cuda:
            raise RuntimeError("OccupancyGridSampler runs nerfacc's CUDA kernels; use StratifiedSampler on the CPU")

        def nerfacc_sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            t_mid = 0.5 * (t_starts + t_ends)
            return sigma_fn(rays_o[ray_indices] + rays_d[ray_indices] * t_mid[:, None])

        ray_indices, t_starts, t_ends = self.estimator.sampling(
            rays_o,
            rays_d,
            sigma_fn=nerfacc_sigma_fn if sigma_fn is not None else None,
            near_plane=0.0,
            render_step_size=self.step_size,
            stratified=stratified,
            alpha_thre=self.alpha_thre if sigma_fn is not None else 0.0,
            early_stop_eps=self.early_stop_eps,
        )
        return RaySamples(t_starts, t_ends, ray_indices.long(), rays_o.shape[0])

    @torch.no_grad()
    def update(self, step: int, density_fn: SigmaFn, generator: torch.Generator | None = None) -> None:
        self.estimator.update_every_n_steps(
            step=step,
            occ_eval_fn=lambda x: density_fn(x) * self.step_size,
            occ_thre=self.occupancy_threshold,
            ema_decay=self.ema_decay,
            warmup_steps=self.warmup_steps,
            n=self.update_every,
        )

    def settled_within(self, updates: int) -> bool:
        # nerfacc's update: occs = max(occs * ema_decay, new) on the visited cells, cells outside
        # the scene hold -1; binaries = occs > min(mean of occs >= 0, occ_thre).
        occs = self.estimator.occs
        inside = occs[occs >= 0]
        if inside.numel() == 0 or not bool(self.estimator.binaries.all()):
            return False
        return float(inside.min()) * self.ema_decay ** max(updates, 0) > self.occupancy_threshold


def make_sampler(aabb: Tensor, num_samples: int, device: torch.device, **kwargs) -> Sampler:
    """The fast sampler for ``device``: nerfacc's grid on CUDA, the PyTorch twin elsewhere."""
    if device.type == "cuda":
        return OccupancyGridSampler(aabb, num_samples, **kwargs).to(device)
    return StratifiedSampler(aabb, num_samples, **kwargs).to(device)
