import pytest
import torch

from backend.render.samplers import OccupancyGridSampler, StratifiedSampler
from backend.render.volume import render_rays

AABB = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])


def sphere_density(x):
    return (x.norm(dim=-1) < 0.5).float() * 200.0


def sphere_field(x):
    return sphere_density(x), torch.full_like(x, 0.3)


def _rays(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, 3.0]).expand(n, 3)
    d = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 0.6, -torch.ones(n, 1)], dim=1)
    return o.contiguous(), d


def test_samples_are_packed_inside_the_box():
    sampler = StratifiedSampler(AABB, num_samples=16, occupancy_resolution=0)
    o, d = _rays(8)
    o = torch.cat([o, torch.tensor([[5.0, 5.0, 5.0]])])
    d = torch.cat([d, torch.tensor([[0.0, 0.0, 1.0]])])  # points away from the box: no samples
    s = sampler.sample(o, d, stratified=True, generator=torch.Generator().manual_seed(1))
    assert s.n_rays == 9
    assert s.t_starts.numel() == 8 * 16
    assert bool((s.ray_indices[1:] >= s.ray_indices[:-1]).all())
    assert bool((s.t_ends > s.t_starts).all())
    pts = o[s.ray_indices] + d[s.ray_indices] * (0.5 * (s.t_starts + s.t_ends))[:, None]
    assert float(pts.abs().max()) <= 1.0 + 1e-5


def test_occupancy_grid_skips_empty_space_without_changing_the_image():
    o, d = _rays()
    full = StratifiedSampler(AABB, num_samples=128, occupancy_resolution=0)
    grid = StratifiedSampler(AABB, num_samples=128, occupancy_resolution=16)
    g = torch.Generator().manual_seed(0)
    for step in range(0, 16 * 12, 16):  # jittered updates: partly covered cells get caught
        grid.update(step, sphere_density, g)
    assert 0.02 < grid.occupancy_fraction() < 0.2  # a r=0.5 sphere fills 6.5% of the box
    s_full = full.sample(o, d)
    s_grid = grid.sample(o, d, sigma_fn=sphere_density)
    assert s_grid.t_starts.numel() < 0.3 * s_full.t_starts.numel()
    a = render_rays(sphere_field, o, d, s_full)
    b = render_rays(sphere_field, o, d, s_grid)
    torch.testing.assert_close(b["opacity"], a["opacity"], atol=1e-3, rtol=0)
    torch.testing.assert_close(b["rgb"], a["rgb"], atol=1e-3, rtol=0)
    # Depth is opacity-normalised: compare it where the rays actually hit, to one interval
    # (a surface interval whose midpoint falls in a cell marked empty moves to the next one).
    hit = a["opacity"] > 0.5
    assert int(hit.sum()) > 50
    torch.testing.assert_close(b["depth"][hit], a["depth"][hit], atol=2.0 / 128, rtol=0)


def test_settled_within_is_a_sound_and_tight_bound_on_the_grid_emptying():
    # Every cell at 0.02, the field now empty, every cell visited (warm-up): after k updates each
    # holds 0.02 * 0.95^k, occupied while above 0.01. settled_within(k) must say so exactly.
    grid = StratifiedSampler(AABB, num_samples=64, occupancy_resolution=4, warmup_steps=10**6, update_every=1)
    grid.occupancy.fill_(0.02)
    empty = lambda x: torch.zeros(x.shape[0])  # noqa: E731
    limit = 13  # 0.02 * 0.95^13 = 0.0103 > 0.01 > 0.02 * 0.95^14
    assert grid.settled_within(limit) and not grid.settled_within(limit + 1)
    for step in range(limit):
        grid.update(step, empty)
    assert bool(grid.binary.all())  # settled: nothing emptied
    grid.update(limit, empty)
    assert not bool(grid.binary.any())  # one more update empties every cell, as the bound allowed
    assert not grid.settled_within(0)  # an emptied grid is never settled
    unfilled = StratifiedSampler(AABB, occupancy_resolution=4)
    assert not unfilled.settled_within(1)  # before its first update the grid holds zeros


def test_sampler_state_round_trips():
    a = StratifiedSampler(AABB, occupancy_resolution=8)
    a.update(0, sphere_density)
    b = StratifiedSampler(AABB, occupancy_resolution=8)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.binary, b.binary)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's occupancy grid needs CUDA")
def test_occupancy_grid_sampler_agrees_with_stratified():
    o, d = (t.cuda() for t in _rays())
    aabb = AABB.cuda()
    ref = StratifiedSampler(aabb, num_samples=256, occupancy_resolution=0).cuda()
    fast = OccupancyGridSampler(aabb, num_samples=256, occupancy_resolution=32).cuda()
    for step in range(0, 16 * 12, 16):
        fast.update(step, sphere_density)
    a = render_rays(sphere_field, o, d, ref.sample(o, d))
    b = render_rays(sphere_field, o, d, fast.sample(o, d, sigma_fn=sphere_density))
    torch.testing.assert_close(b["opacity"], a["opacity"], atol=1e-2, rtol=0)
    hit = a["opacity"] > 0.5
    torch.testing.assert_close(b["depth"][hit], a["depth"][hit], atol=2e-2, rtol=0)


def _opaque_ball(x):
    # An opaque ball in a faint fog: rays that hit it stop early, the others cross the whole box.
    return (x.norm(dim=-1) < 0.6).float() * 500.0 + 0.05


@pytest.mark.parametrize("chunk", [1, 2, 8])  # 2 is the default; rounds grow while few rays are left
def test_front_to_back_pruning_keeps_the_reference_samples_with_fewer_densities(chunk):
    o, d = _rays(300, seed=3)
    sampler = StratifiedSampler(AABB, num_samples=96, occupancy_resolution=0, prune_chunk=chunk)
    raw = sampler.sample(o, d, stratified=True, generator=torch.Generator().manual_seed(4))
    evaluated = []

    def counted(x):
        evaluated.append(x.shape[0])
        return _opaque_ball(x)

    fast = sampler._prune(raw, o, d, counted)
    n_fast = sum(evaluated)
    evaluated.clear()
    ref = sampler._prune_reference(raw, o, d, counted)
    n_ref = sum(evaluated)
    assert n_ref == raw.t_starts.numel()
    assert n_fast < 0.8 * n_ref  # the samples behind the ball are never evaluated
    assert torch.equal(fast.ray_indices, ref.ray_indices)
    assert torch.equal(fast.t_starts, ref.t_starts) and torch.equal(fast.t_ends, ref.t_ends)
    assert fast.n_rays == ref.n_rays == 300
    # prune_chunk=0 is the reference path itself.
    sampler.prune_chunk = 0
    same = sampler.sample(o, d, sigma_fn=_opaque_ball, stratified=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(same.t_starts, ref.t_starts)


def test_front_to_back_pruning_renders_like_the_full_comb():
    # Without fog (whose alphas fall under alpha_thre, so pruning rightly drops them) the pruned
    # samples render what every sample renders, to the early-stop transmittance.
    o, d = _rays(200, seed=5)
    full = StratifiedSampler(AABB, num_samples=128, occupancy_resolution=0)

    def ball(x):
        return (x.norm(dim=-1) < 0.6).float() * 500.0

    def ball_field(x):
        return ball(x), torch.full_like(x, 0.3)

    a = render_rays(ball_field, o, d, full.sample(o, d))
    b = render_rays(ball_field, o, d, full.sample(o, d, sigma_fn=ball))
    assert int((a["opacity"] > 0.5).sum()) > 50
    torch.testing.assert_close(b["opacity"], a["opacity"], atol=2e-3, rtol=0)
    torch.testing.assert_close(b["rgb"], a["rgb"], atol=2e-3, rtol=0)
