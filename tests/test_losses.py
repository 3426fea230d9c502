"""Loss terms on hand-checkable cases: known values, zero for perfect predictions, regions, gradients."""
import math

import pytest
import torch

from mattingkit import losses as L
from mattingkit.config import LossConfig


def make_batch(n=2, h=16, w=16, seed=0):
    """Trimap: left quarter background, right quarter foreground, the middle half unknown."""
    g = torch.Generator().manual_seed(seed)
    trimap = torch.full((n, 1, h, w), 0.5)
    trimap[..., : w // 4] = 0.0
    trimap[..., 3 * w // 4:] = 1.0
    alpha = torch.rand(n, 1, h, w, generator=g)
    alpha = torch.where(trimap == 0.5, alpha, trimap)
    fg = torch.rand(n, 3, h, w, generator=g)
    bg = torch.rand(n, 3, h, w, generator=g)
    return {"image": fg * alpha + bg * (1 - alpha), "alpha": alpha, "trimap": trimap, "fg": fg, "bg": bg,
            "unknown": (trimap == 0.5).float(), "id": [str(i) for i in range(n)]}


ALL_TERMS = dict(alpha=1.0, comp=1.0, grad=1.0, laplacian=1.0, mse=1.0, thin_mse=1.0, bg_penalty=1.0,
                 grad_mse=1.0, gan=1.0)


# ------------------------------------------------------------------------------------ Charbonnier
def test_charbonnier_constant_error_gives_known_value():
    b = make_batch()
    eps = 1e-3
    pred = b["alpha"] + 0.2  # a constant error of 0.2 everywhere
    expected = math.sqrt(0.2 ** 2 + eps ** 2)
    got = L.alpha_loss(pred, b["alpha"], b["unknown"], eps=eps)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # composition: |0.2 * (F - B)| per channel, averaged over channels and unknown pixels
    comp = L.composition_loss(pred, b["fg"], b["bg"], b["alpha"], b["unknown"], eps=eps)
    per_px = torch.sqrt((0.2 * (b["fg"] - b["bg"])) ** 2 + eps ** 2).mean(1, keepdim=True)
    expected_comp = (per_px * b["unknown"]).sum() / b["unknown"].sum()
    assert comp.item() == pytest.approx(expected_comp.item(), rel=1e-5)


def test_normalisation_is_by_unknown_pixel_count():
    b = make_batch(n=1, h=8, w=8)
    gt = b["alpha"]
    pred = gt.clone()
    pred[0, 0, 0, 0] = gt[0, 0, 0, 0] + 0.9  # a known (background) pixel: must be ignored
    pred[0, 0, 3, 3] = gt[0, 0, 3, 3] + 0.4  # one unknown pixel wrong by 0.4
    n_unknown = int(b["unknown"].sum())      # 8 rows x 4 columns
    assert n_unknown == 32
    eps = 1e-6
    expected = (0.4 + (n_unknown - 1) * eps) / n_unknown
    assert L.alpha_loss(pred, gt, b["unknown"], eps).item() == pytest.approx(expected, rel=1e-4)
    # over all pixels instead: both errors count, divided by 64
    expected_all = (0.4 + 0.9 + 62 * eps) / 64
    assert L.alpha_loss(pred, gt, None, eps).item() == pytest.approx(expected_all, rel=1e-4)


def test_empty_unknown_region_gives_zero_not_nan():
    gt = torch.zeros(1, 1, 8, 8)
    mask = torch.zeros_like(gt)
    assert L.alpha_loss(gt + 0.5, gt, mask).item() == 0.0


def test_replace_known():
    trimap = torch.tensor([[[[0.0, 0.5, 1.0, 0.5]]]])
    alpha = torch.tensor([[[[0.7, 0.2, 0.1, 0.9]]]])
    assert L.replace_known(alpha, trimap).flatten().tolist() == pytest.approx([0.0, 0.2, 1.0, 0.9])


# ------------------------------------------------------------------------------------ zeros / gradients
def test_perfect_prediction_gives_zero_for_every_term():
    b = make_batch()
    perfect = {"alpha": b["alpha"].clone()}
    cfg = LossConfig(**{k: v for k, v in ALL_TERMS.items() if k != "gan"})
    terms = L.matting_loss(perfect, b, cfg)
    assert set(terms) == {"alpha", "comp", "grad", "laplacian", "mse", "thin_mse", "bg_penalty",
                          "grad_mse", "total"}
    for name, value in terms.items():
        # the two Charbonnier terms bottom out at eps (1e-6); everything else is exactly zero
        limit = 1.1e-6 if name in ("alpha", "comp") else 0.0
        if name == "total":
            limit = 2.2e-6
        assert 0.0 <= value.item() <= limit, name


def test_gradient_reaches_only_the_unknown_region():
    b = make_batch()
    pred = (b["alpha"] * 0.5 + 0.25).requires_grad_(True)
    d = torch.nn.Conv2d(4, 1, 3, padding=1)
    _, fake = L.discriminator_inputs(b, pred)
    cfg = LossConfig(**ALL_TERMS)
    terms = L.matting_loss({"alpha": pred}, b, cfg, fake_logits=d(fake))
    terms["total"].backward()
    known = b["unknown"] == 0
    assert pred.grad[known].abs().max().item() == 0.0
    assert (pred.grad[~known] != 0).float().mean().item() > 0.99  # every unknown pixel is pushed


def test_region_all_lets_known_pixels_contribute():
    b = make_batch()
    pred = (b["alpha"] * 0.5 + 0.25).requires_grad_(True)
    terms = L.matting_loss({"alpha": pred}, b, LossConfig(region="all", alpha=0, comp=0, mse=1.0, grad=1.0))
    terms["total"].backward()
    assert pred.grad[b["unknown"] == 0].abs().sum().item() > 0


# ------------------------------------------------------------------------------------ grad / laplacian
def test_sobel_and_gradient_loss_on_a_ramp():
    slope = 0.05
    ramp = (torch.arange(16.0) * slope).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    gx, gy = L.sobel(ramp)
    assert torch.allclose(gx[..., 1:-1], torch.full_like(gx[..., 1:-1], slope))
    assert gy.abs().max().item() < 1e-6
    inner = torch.zeros(1, 1, 16, 16)
    inner[..., 1:-1] = 1.0
    flat = torch.zeros_like(ramp)
    assert L.gradient_loss(ramp, flat, inner).item() == pytest.approx(slope, rel=1e-5)


def test_laplacian_pyramid_reconstructs_and_constant_offset_is_low_pass():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 32, 32, generator=g)
    pyr = L.laplacian_pyramid(x, 5)
    assert [p.shape[-1] for p in pyr] == [32, 16, 8, 4, 2]
    # collapse the pyramid: expand the residual back up and add the bands
    cur = pyr[-1]
    for band in reversed(pyr[:-1]):
        up = torch.zeros_like(band)
        up[..., ::2, ::2] = cur * 4
        cur = band + L._gauss(up)
    assert torch.allclose(cur, x, atol=1e-5)
    # a constant offset c appears only in the residual level (weight 2^4)
    gt = torch.zeros(1, 1, 32, 32)
    assert L.laplacian_loss(gt + 0.01, gt).item() == pytest.approx(16 * 0.01, rel=1e-4)
    assert L.laplacian_loss(x, x).item() == 0.0


# ------------------------------------------------------------------------------------ competition family
def test_competition_mse_family_known_values():
    gt = torch.zeros(1, 1, 9, 9)
    gt[..., 4, :] = 1.0  # a one-pixel horizontal line: all of it is "thin"
    zero = torch.zeros_like(gt)
    assert L.mse_loss(zero, gt).item() == pytest.approx(9 / 81)
    assert L.thin_mse_loss(zero, gt).item() == pytest.approx(5 * 9 / (81 + 4 * 9))
    # background fog: pred 0.1 where gt == 0 -> 0.1^2 + 2 * (0.1 - 0.02)
    fog = torch.full_like(gt, 0.1)
    assert L.bg_penalty_loss(fog, torch.zeros_like(gt)).item() == pytest.approx(0.01 + 2 * 0.08, rel=1e-5)
    # gradient-weighted: a vertical step, edge columns 1 and 2 weigh 5
    step = torch.zeros(1, 1, 4, 4)
    step[..., 2:] = 1.0
    assert L.grad_mse_loss(torch.zeros_like(step), step).item() == pytest.approx((4 * 5 + 4) / (8 * 5 + 8))


def test_thin_map_spares_the_core_of_a_thick_object():
    gt = torch.zeros(1, 1, 20, 20)
    gt[..., 4:16, 4:16] = 1.0
    thin = L.thin_map(gt, kernel=5)
    assert thin[0, 0, 10, 10] == 0  # deep inside
    assert thin[0, 0, 4, 10] == 1 and thin[0, 0, 5, 10] == 1 and thin[0, 0, 6, 10] == 0
    assert thin[0, 0, 0, 0] == 0    # background


# ------------------------------------------------------------------------------------ GAN
@pytest.mark.parametrize("kind,g_at_zero,d_at_zero", [("bce", math.log(2), math.log(2)),
                                                      ("lsgan", 1.0, 0.5), ("hinge", 0.0, 1.0)])
def test_gan_losses_at_zero_logits(kind, g_at_zero, d_at_zero):
    z = torch.zeros(2, 1, 3, 3)
    assert L.gan_loss_g(z, kind).item() == pytest.approx(g_at_zero, rel=1e-6)
    d = L.gan_loss_d(z, z, kind)
    assert d["total"].item() == pytest.approx(d_at_zero, rel=1e-6)
    assert d["total"].item() == pytest.approx(0.5 * (d["d_real"] + d["d_fake"]).item())


def test_gan_losses_confident_discriminator():
    real, fake = torch.full((1, 1, 2, 2), 3.0), torch.full((1, 1, 2, 2), -3.0)
    assert L.gan_loss_d(real, fake, "hinge")["total"].item() == 0.0
    assert L.gan_loss_d(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "lsgan")["total"].item() == 0.0
    assert L.gan_loss_g(torch.ones(1, 1, 2, 2), "lsgan").item() == 0.0
    assert L.gan_loss_g(fake, "hinge").item() == 3.0
    assert L.gan_loss_d(real, fake, "bce")["d_real"].item() == pytest.approx(math.log1p(math.exp(-3)))
    with pytest.raises(ValueError, match="gan_type"):
        L.gan_loss_g(real, "wgan")


# ------------------------------------------------------------------------------------ discriminator inputs
def test_discriminator_inputs_perfect_prediction_identical():
    b = make_batch()
    real, fake = L.discriminator_inputs(b, b["alpha"].clone())
    assert real.shape == (2, 4, 16, 16)
    assert torch.equal(real, fake)
    assert torch.equal(real[:, 3:], b["trimap"])


def test_discriminator_fake_depends_on_predicted_alpha_not_on_gt():
    """The fake composite is alpha_pred*F + (1-alpha_pred)*B: d fake / d alpha = F - B in the unknown
    region, and changing the GT alpha leaves it unchanged (no leak of the answer into the fake)."""
    b = make_batch()
    pred = torch.full_like(b["alpha"], 0.3, requires_grad=True)
    real, fake = L.discriminator_inputs(b, pred)
    fake[:, :3].sum().backward()
    unknown = b["unknown"].bool()
    expected = (b["fg"] - b["bg"]).sum(1, keepdim=True)
    assert torch.allclose(pred.grad[unknown], expected[unknown], atol=1e-6)
    assert pred.grad[~unknown].abs().max().item() == 0.0
    other = dict(b, alpha=torch.where(unknown, 1 - b["alpha"], b["alpha"]))
    real2, fake2 = L.discriminator_inputs(other, pred.detach())
    assert torch.equal(fake2, fake.detach())
    assert not torch.equal(real2, real)


# ------------------------------------------------------------------------------------ matting_loss
def test_matting_loss_total_is_weighted_sum_of_enabled_terms():
    b = make_batch()
    pred = {"alpha": (b["alpha"] * 0.8 + 0.1)}
    cfg = LossConfig(alpha=0.5, comp=0.25, grad=2.0, laplacian=0.0, mse=0.0)
    terms = L.matting_loss(pred, b, cfg)
    assert set(terms) == {"alpha", "comp", "grad", "total"}
    expected = 0.5 * terms["alpha"] + 0.25 * terms["comp"] + 2.0 * terms["grad"]
    assert terms["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    d_logits = torch.zeros(2, 1, 3, 3)
    with_gan = L.matting_loss(pred, b, LossConfig(alpha=1.0, comp=0.0, gan=0.1), fake_logits=d_logits)
    assert with_gan["gan"].item() == pytest.approx(math.log(2))
    assert with_gan["total"].item() == pytest.approx(with_gan["alpha"].item() + 0.1 * math.log(2), rel=1e-6)


def test_matting_loss_aux_outputs_are_deep_supervised():
    b = make_batch()
    gt = b["alpha"]
    sides = [gt + 0.1, gt + 0.3]
    cfg = LossConfig(region="all", alpha=0.0, comp=0.0, mse=1.0, aux=0.5)
    terms = L.matting_loss({"alpha": gt.clone(), "aux_alphas": sides}, b, cfg)
    assert terms["aux"].item() == pytest.approx((0.1 ** 2 + 0.3 ** 2) / 2, rel=1e-5)
    assert terms["total"].item() == pytest.approx(terms["mse"].item() + 0.5 * terms["aux"].item(), rel=1e-6)
    no_aux = L.matting_loss({"alpha": gt.clone(), "aux_alphas": sides}, b, LossConfig(region="all", alpha=0.0,
                            comp=0.0, mse=1.0, aux=0.0))
    assert "aux" not in no_aux


def test_matting_loss_errors_are_clear():
    b = make_batch()
    pred = {"alpha": b["alpha"]}
    no_layers = {k: v for k, v in b.items() if k not in ("fg", "bg")}
    with pytest.raises(ValueError, match="loss.comp"):
        L.matting_loss(pred, no_layers, LossConfig())
    with pytest.raises(ValueError, match="region"):
        L.matting_loss(pred, b, LossConfig(region="inside"))
    with pytest.raises(ValueError, match="trimap"):
        L.matting_loss(pred, {"alpha": b["alpha"]}, LossConfig(comp=0.0))
    with pytest.raises(ValueError, match="every loss weight is zero"):
        L.matting_loss(pred, b, LossConfig(alpha=0.0, comp=0.0))
    with pytest.raises(ValueError, match="shape"):
        L.matting_loss({"alpha": b["alpha"][:, :, :8]}, b, LossConfig())


def test_losses_are_float32_under_bf16_autocast():
    b = make_batch()
    pred = (b["alpha"] * 0.5 + 0.2).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = L.matting_loss({"alpha": pred}, b, LossConfig(**{k: v for k, v in ALL_TERMS.items()}),
                               fake_logits=torch.zeros(2, 1, 3, 3, dtype=torch.bfloat16))
    for name, v in terms.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), name
    ref = L.matting_loss({"alpha": pred.float()}, b, LossConfig(**ALL_TERMS),
                         fake_logits=torch.zeros(2, 1, 3, 3))
    assert terms["total"].item() == pytest.approx(ref["total"].item(), rel=1e-5)
