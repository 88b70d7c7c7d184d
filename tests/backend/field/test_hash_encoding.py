import warnings

import pytest
import torch

from backend.field import hash_encoding
from backend.field.hash_encoding import HashEncoding

PRIMES = (1, 2654435761, 805459861)


def _tiny() -> HashEncoding:
    # Level 0: scale 2*1-1 = 1, resolution 2, 2^3 = 8 <= 16 rows -> dense, 8 rows.
    # Level 1: scale 2*4-1 = 7, resolution 8, 512 > 16 -> hashed, 16 rows.
    enc = HashEncoding(num_levels=2, features_per_level=2, log2_table_size=4, base_resolution=2, per_level_scale=4.0)
    with torch.no_grad():
        enc.table.copy_(torch.arange(enc.table.numel(), dtype=torch.float32).reshape(-1, 2))
    return enc


def _reference(enc_table: torch.Tensor, x: tuple[float, float, float]) -> list[float]:
    """Instant-NGP lookup written out with Python integers, corner by corner."""
    out = []
    for level, (scale, dense, size, offset) in enumerate([(1.0, True, 8, 0), (7.0, False, 16, 8)]):
        pos = [xi * scale + 0.5 for xi in x]
        cell = [int(p // 1) for p in pos]
        frac = [p - c for p, c in zip(pos, cell)]
        acc = [0.0, 0.0]
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    i, j, k = cell[0] + dx, cell[1] + dy, cell[2] + dz
                    if dense:
                        row = (i + j * 2 + k * 4) % size
                    else:
                        row = ((i * PRIMES[0]) ^ (j * PRIMES[1]) ^ (k * PRIMES[2])) % 2**32 % size
                    w = (frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1]) * (frac[2] if dz else 1 - frac[2])
                    for f in range(2):
                        acc[f] += w * float(enc_table[offset + row, f])
        out += acc
    return out


def test_levels_dense_then_hashed():
    enc = _tiny()
    assert enc.resolutions.tolist() == [2, 8]
    assert enc.dense.tolist() == [True, False]
    assert enc.sizes.tolist() == [8, 16]
    assert enc.offsets.tolist() == [0, 8]
    assert enc.table.shape == (24, 2)


def test_matches_hand_computed_lookup():
    enc = _tiny()
    points = [(0.3, 0.6, 0.9), (0.05, 0.95, 0.5), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)]
    out = enc(torch.tensor(points))
    assert out.shape == (4, 4)
    expected = torch.tensor([_reference(enc.table.detach(), p) for p in points])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


def test_hashed_row_of_one_corner_by_hand():
    # Level 1 at x = (0.3, 0.6, 0.9): position (2.6, 4.7, 6.8), lower corner (2, 4, 6):
    # 2 ^ (4 * 2654435761) ^ (6 * 805459861) = 2 ^ 10617743044 ^ 4832759166, mod 2^32 then mod 16.
    enc = _tiny()
    idx, weights = enc.corner_indices(torch.tensor([[0.3, 0.6, 0.9]]))
    row = (2 ^ 10617743044 ^ 4832759166) % 2**32 % 16
    assert int(idx[0, 1, 0]) == 8 + row
    assert int(idx[0, 0, 0]) == 0 + 2 + 4  # dense level 0, lower corner (0, 1, 1)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2))


def test_default_shapes_and_init():
    enc = HashEncoding(num_levels=4, log2_table_size=10, max_resolution=64)
    out = enc(torch.rand(100, 3))
    assert out.shape == (100, 8)
    assert float(enc.table.detach().abs().max()) <= 1e-4
    out.sum().backward()
    assert enc.table.grad is not None and float(enc.table.grad.abs().sum()) > 0


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="allowed"):
        HashEncoding(implementation="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_tcnn_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(hash_encoding, "_warned_fallback", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = HashEncoding(num_levels=2, log2_table_size=8, implementation="tcnn")
        HashEncoding(num_levels=2, log2_table_size=8, implementation="tcnn")
    assert a.implementation == "torch"
    assert len([w for w in caught if "tcnn requested" in str(w.message)]) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and tinycudann")
def test_tcnn_matches_torch():
    pytest.importorskip("tinycudann")
    kwargs = dict(num_levels=8, features_per_level=2, log2_table_size=14, base_resolution=16, max_resolution=256)
    fast = HashEncoding(implementation="tcnn", **kwargs).cuda()
    ref = HashEncoding(implementation="torch", **kwargs).cuda()
    assert fast.implementation == "tcnn"
    with torch.no_grad():
        params = fast._tcnn.params.detach().float()
        ref.table.copy_(params[: ref.table.numel()].reshape(ref.table.shape))
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-2, atol=1e-3)


def test_frozen_fine_levels_get_no_gradient_and_coarse_ones_do():
    from backend.field.hash_encoding import HashEncoding

    enc = HashEncoding(num_levels=6, features_per_level=2, log2_table_size=12, base_resolution=4, max_resolution=64)
    limit = float(enc.resolutions[2])
    keep = enc.rows_up_to(limit)
    assert keep.shape == (enc.table.shape[0],) and keep.any() and not keep.all()
    assert int(keep.sum()) == int(enc.sizes[:3].sum())  # levels 0..2, the coarse ones first
    enc.freeze_levels_above(limit)
    enc(torch.rand(512, 3)).pow(2).sum().backward()
    grad = enc.table.grad
    assert grad[~keep].abs().max() == 0.0
    assert grad[keep].abs().max() > 0.0
    before = enc.table.detach().clone()
    optimizer = torch.optim.Adam(enc.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    optimizer.step()
    assert torch.equal(enc.table.detach()[~keep], before[~keep])  # Adam leaves frozen rows exactly


@pytest.mark.parametrize("features", [2, 4])
def test_fast_lookup_equals_the_reference_values_and_gradients(features):
    # 6 levels from 4 to 128 cells with 2^10 rows: dense levels, then hashed ones (both blocks).
    enc = HashEncoding(num_levels=6, features_per_level=features, log2_table_size=10, base_resolution=4, max_resolution=128)
    assert 0 < enc._num_dense < enc.num_levels
    with torch.no_grad():
        enc.table.normal_(generator=torch.Generator().manual_seed(0))
    x = torch.rand(700, 3, generator=torch.Generator().manual_seed(1))
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.5, 1.0, 0.0]])  # box corners and faces
    idx, w = enc.corner_indices(x)
    rows, w_fast = enc.corner_rows(x)
    assert rows.dtype == torch.int32 and rows.shape == (6, 700, 8)  # level-major
    assert torch.equal(rows.transpose(0, 1).long(), idx) and torch.equal(w_fast.transpose(0, 1), w)
    grad_out = torch.randn(700, enc.out_dim, generator=torch.Generator().manual_seed(2))
    outs, grads = [], []
    for reference in (True, False):
        enc.reference = reference
        enc.table.grad = None
        out = enc(x)
        out.backward(grad_out)
        outs.append(out.detach())
        grads.append(enc.table.grad.clone())
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-6)
    assert grads[1].abs().max() > 0


def test_fast_lookup_keeps_the_frozen_levels_mask():
    # The complex view must still route the gradient through the table's hook (freeze_levels_above).
    enc = HashEncoding(num_levels=6, features_per_level=2, log2_table_size=12, base_resolution=4, max_resolution=64)
    assert not enc.reference
    limit = float(enc.resolutions[2])
    keep = enc.rows_up_to(limit)
    enc.freeze_levels_above(limit)
    enc(torch.rand(512, 3)).pow(2).sum().backward()
    assert enc.table.grad[~keep].abs().max() == 0.0 and enc.table.grad[keep].abs().max() > 0.0
