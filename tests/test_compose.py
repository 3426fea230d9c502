"""compose.composite: the one alpha*F + (1-alpha)*B formula, numpy and torch."""
import numpy as np
import pytest
import torch

from mattingkit.compose import composite


def _rng_arrays(seed=0, h=5, w=7):
    rng = np.random.default_rng(seed)
    fg = rng.random((h, w, 3), dtype=np.float32)
    bg = rng.random((h, w, 3), dtype=np.float32)
    alpha = rng.random((h, w), dtype=np.float32)
    return fg, bg, alpha


def test_numpy_matches_per_pixel_formula():
    fg, bg, alpha = _rng_arrays()
    out = composite(fg, bg, alpha)
    assert out.shape == (5, 7, 3) and out.dtype == np.float32
    for y, x, c in [(0, 0, 0), (4, 6, 2), (2, 3, 1)]:
        expected = alpha[y, x] * fg[y, x, c] + (1 - alpha[y, x]) * bg[y, x, c]
        assert out[y, x, c] == pytest.approx(expected, abs=1e-7)


def test_numpy_alpha_hw_and_hw1_agree_and_extremes_select_layers():
    fg, bg, alpha = _rng_arrays(1)
    np.testing.assert_array_equal(composite(fg, bg, alpha), composite(fg, bg, alpha[..., None]))
    np.testing.assert_array_equal(composite(fg, bg, np.ones((5, 7), np.float32)), fg)
    np.testing.assert_array_equal(composite(fg, bg, np.zeros((5, 7), np.float32)), bg)


def test_numpy_broadcast_background_colour():
    fg, _, alpha = _rng_arrays(2)
    colour = np.array([0.2, 0.4, 0.6], np.float32)
    out = composite(fg, colour, alpha)
    full = composite(fg, np.broadcast_to(colour, fg.shape).copy(), alpha)
    np.testing.assert_allclose(out, full, atol=0)


def test_torch_matches_numpy():
    fg, bg, alpha = _rng_arrays(3)
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))[None]

    out = composite(t(fg), t(bg), torch.from_numpy(alpha)[None, None])
    assert out.shape == (1, 3, 5, 7)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), composite(fg, bg, alpha), atol=1e-7)


def test_torch_broadcast_and_gradient_is_f_minus_b():
    g = torch.Generator().manual_seed(0)
    fg = torch.rand(2, 3, 4, 4, generator=g)
    bg = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1)
    alpha = torch.rand(2, 1, 4, 4, generator=g, requires_grad=True)
    out = composite(fg, bg, alpha)
    assert out.shape == (2, 3, 4, 4)
    out.sum().backward()
    np.testing.assert_allclose(alpha.grad, (fg - bg).sum(1, keepdim=True), atol=1e-6)


def test_shape_and_type_errors_are_clear():
    fg, bg, alpha = _rng_arrays()
    with pytest.raises(ValueError, match="shapes do not match"):
        composite(fg, bg, alpha[:4])
    with pytest.raises(ValueError, match="channels-last"):
        composite(np.moveaxis(fg, -1, 0), bg, alpha)
    with pytest.raises(TypeError, match="all be numpy arrays or all torch tensors"):
        composite(torch.from_numpy(fg), bg, alpha)
    with pytest.raises(TypeError, match="float"):
        composite((fg * 255).astype(np.uint8), bg, alpha)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        composite(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="shapes do not match"):
        composite(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 1, 4, 5))
