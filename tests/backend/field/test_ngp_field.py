import torch

from backend.field.ngp_field import NGPField, NGPFieldConfig, load_field, save_field, trunc_exp

TINY = NGPFieldConfig(num_levels=4, log2_table_size=10, max_resolution=64, hidden_dim=16)


def _field() -> NGPField:
    torch.manual_seed(0)
    return NGPField(TINY)


def test_shapes_ranges_and_outside_density():
    field = _field()
    inside = torch.rand(50, 3) * 1.8 - 0.9
    outside = torch.tensor([[1.5, 0.0, 0.0], [0.0, -1.2, 0.0], [0.0, 0.0, 3.0]])
    with torch.no_grad():
        sigma, rgb = field(torch.cat([inside, outside]))
    assert sigma.shape == (53,) and rgb.shape == (53, 3)
    assert bool((sigma[:50] > 0).all())
    assert sigma[50:].tolist() == [0.0, 0.0, 0.0]
    assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    torch.testing.assert_close(field.density(inside), sigma[:50])
    torch.testing.assert_close(field.color(inside), rgb[:50])


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([20.0], requires_grad=True)
    trunc_exp(x).backward()
    assert float(x.grad) == float(torch.exp(torch.tensor(15.0)))


def test_save_load_round_trip(tmp_path):
    field = _field()
    with torch.no_grad():
        field.encoding.table.normal_()
    save_field(tmp_path / "field", field)
    loaded = load_field(tmp_path / "field", "cpu")
    x = torch.rand(64, 3) * 2 - 1
    with torch.no_grad():
        a, b = field(x), loaded(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert loaded.config == field.config


def test_load_missing_field_says_how_to_fix(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="run the reconstruct stage"):
        load_field(tmp_path, "cpu")


def test_parameter_groups_split_the_grid_from_the_mlps():
    field = NGPField(NGPFieldConfig(num_levels=4, log2_table_size=10, base_resolution=8, max_resolution=64, hidden_dim=16))
    grid, mlp = field.parameter_groups(1e-2, 1e-3)
    assert (grid["lr"], mlp["lr"]) == (1e-2, 1e-3)
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(grid["params"]) == ids(field.encoding.parameters())
    assert ids(grid["params"]) | ids(mlp["params"]) == ids(field.parameters())
    assert not ids(grid["params"]) & ids(mlp["params"])
