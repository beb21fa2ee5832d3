"""AFBR pieces (Eq. 3-8): straight-through mask, token split, patch helpers, the loss, the
ablation modes, and that a tiny model overfits."""

from __future__ import annotations

import pytest
import torch

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.training.afbr import (AFBRModel, foreground_coverage, reconstruction_loss,
                                            split_tokens, ste_mask, token_foreground)
from fastdrivevla_ros.training.decoder import PATCH, ReconDecoder, patchify, unpatchify


@pytest.fixture(scope="module")
def vla_model(tiny_vla):
    return tiny_vla[0]


def _afbr(vla_model, mode="afbr", depth=2, padding="learned"):
    from fastdrivevla_ros.pruning.recon import ReconPruner

    torch.manual_seed(0)
    decoder = None if mode == "mask_prediction" else ReconDecoder.from_vla(vla_model, depth)
    return AFBRModel(ReconPruner.from_vla(vla_model), decoder, mode, padding=padding)


def _batch(b=2, grid=(2, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = grid[0] * PATCH, grid[1] * PATCH
    image = torch.rand(b, 3, h, w, generator=g)
    mask = torch.zeros(b, 1, h, w)
    mask[:, :, :PATCH, :PATCH * 2] = 1          # two foreground tokens per image
    v = torch.randn(b, grid[0] * grid[1], 64, generator=g) * 0.03
    return v, image, mask


def test_ste_forward_is_exactly_binary_and_backward_is_identity():
    s = torch.tensor([-2.0, -1e-7, 0.0, 1e-7, 0.3, 7.0], requires_grad=True)
    m = ste_mask(s)
    assert m.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]        # exactly 1[S > 0]
    weights = torch.arange(6.0)
    (m * weights).sum().backward()
    assert torch.equal(s.grad, weights)                          # dM~/dS = 1


def test_split_zeroes_the_other_branch_or_fills_it_with_the_padding_token():
    v, m = torch.ones(1, 3, 4), torch.tensor([[1.0, 0.0, 1.0]])
    fore, back = split_tokens(v, m)
    assert fore[0, :, 0].tolist() == [1, 0, 1] and back[0, :, 0].tolist() == [0, 1, 0]
    fore, back = split_tokens(v, m, pad=torch.full((4,), 5.0))
    assert fore[0, :, 0].tolist() == [1, 5, 1] and back[0, :, 0].tolist() == [5, 1, 5]


def test_gradients_reach_the_scorer_query_and_layer_through_the_mask(vla_model):
    net = _afbr(vla_model)
    v, image, mask = _batch()
    out = net(v, image, mask, (2, 3))
    out["loss"].backward()
    for name, p in [("scorer", net.pruner.scorer.weight), ("query", net.pruner.query),
                    ("layer", net.pruner.layer.mlp.down_proj.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_patchify_unpatchify_round_trip_in_token_raster_order():
    imgs = torch.rand(2, 3, 2 * PATCH, 3 * PATCH)
    patches = patchify(imgs)
    assert patches.shape == (2, 6, PATCH * PATCH * 3)
    assert torch.equal(unpatchify(patches, (2, 3)), imgs)
    # token 4 = row 1, col 1
    assert torch.equal(patches[0, 4].reshape(PATCH, PATCH, 3).permute(2, 0, 1),
                       imgs[0, :, PATCH:2 * PATCH, PATCH:2 * PATCH])


def test_reconstruction_loss_is_lambda_weighted_ssim_and_mse():
    from pytorch_msssim import ssim

    gt = torch.rand(1, 3, 56, 56)
    assert float(reconstruction_loss(gt, gt)["loss"]) == pytest.approx(0.0, abs=1e-6)
    pred = gt * 0.5
    out = reconstruction_loss(pred, gt, lam=0.2)
    expect = 0.2 * (1 - ssim(pred, gt, data_range=1.0)) + 0.8 * ((pred - gt) ** 2).mean()
    assert float(out["loss"].detach()) == pytest.approx(float(expect), rel=1e-5)


def test_total_loss_weights_branches_by_alpha(vla_model):
    net = _afbr(vla_model)
    v, image, mask = _batch()
    with torch.no_grad():
        out = net(v, image, mask, (2, 3))
    assert float(out["loss"]) == pytest.approx(0.5 * float(out["loss_fore"])
                                               + 0.5 * float(out["loss_back"]), rel=1e-6)
    assert 0.0 <= float(out["fg_fraction"]) <= 1.0


def test_foreground_only_ablation_has_no_background_branch(vla_model):
    out = _afbr(vla_model, "foreground_only")(*_batch(), (2, 3))
    assert "loss_back" not in out and torch.equal(out["loss"], out["loss_fore"])


def test_mask_prediction_ablation_needs_no_decoder_and_fits_the_mask(vla_model):
    net = _afbr(vla_model, "mask_prediction")
    assert net.decoder is None
    v, image, mask = _batch()
    out = net(v, image, mask, (2, 3))
    target = token_foreground(mask)
    expect = torch.nn.functional.binary_cross_entropy_with_logits(out["scores"], target)
    assert float(out["loss"].detach()) == pytest.approx(float(expect), rel=1e-5)


def test_unknown_mode_is_a_config_error(vla_model):
    with pytest.raises(ConfigError):
        _afbr(vla_model, "pixels_please")


def test_loss_decreases_when_overfitting_two_images(vla_model):
    net = _afbr(vla_model)
    v, image, mask = _batch()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = net(v, image, mask, (2, 3))
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_foreground_coverage_counts_foreground_in_the_kept_half():
    fg = torch.tensor([True, True, False, False, False, False])
    assert foreground_coverage(torch.tensor([6.0, 5, 4, 3, 2, 1]), fg) == 1.0
    assert foreground_coverage(torch.tensor([1.0, 6, 5, 4, 3, 2]), fg) == 0.5
    assert foreground_coverage(torch.tensor([1.0, 2, 3, 4, 5, 6]), fg) == 0.0


def test_decoder_warmup_trains_only_the_decoder_side_on_seeded_random_splits(vla_model):
    net = _afbr(vla_model)
    v, image, mask = _batch()
    out = net(v, image, mask, (2, 3), warmup=torch.Generator().manual_seed(3))
    out["loss"].backward()
    assert all(p.grad is None for p in net.pruner.parameters())          # the scorer rests
    assert net.pad.grad.abs().sum() > 0
    assert net.decoder.head[-1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        again = net(v, image, 1 - mask, (2, 3), warmup=torch.Generator().manual_seed(3))
        other = net(v, image, mask, (2, 3), warmup=torch.Generator().manual_seed(4))
    loss = float(out["loss"].detach())
    assert float(again["loss"]) == pytest.approx(loss, rel=1e-6)          # GT mask unused
    assert float(other["loss"]) != pytest.approx(loss, rel=1e-6)


def test_decoder_warmup_targets_exactly_the_tokens_each_branch_gets(vla_model):
    """With a decoder that copies its input patch, the warm-up loss is zero: the target of each
    branch is the image where that branch has tokens and zero elsewhere."""
    net = _afbr(vla_model)
    v, image, _ = _batch()
    grid = (2, 3)

    class CopyPatches(torch.nn.Module):     # token i "encodes" its own patch
        def forward(self, x, positions):
            present = (x != net.pad).any(-1, keepdim=True).to(x.dtype)
            return patchify(image.repeat(2, 1, 1, 1)) * present

    net.decoder = CopyPatches()
    out = net(v, image, torch.zeros_like(image[:, :1]), grid,
              warmup=torch.Generator().manual_seed(0))
    assert float(out["mse_fore"]) == 0.0 and float(out["mse_back"]) == 0.0


def test_training_schedule_rests_the_scorer_during_the_warmup_then_slows_the_decoder():
    from fastdrivevla_ros.training.trainer import TrainConfig, lr_lambdas

    cfg = TrainConfig(model="m", data="d", out="o", max_steps=110, decoder_warmup_steps=10,
                      decoder_lr_scale=0.1)
    pruner, decoder = lr_lambdas(cfg, 110)
    assert [pruner(s) for s in (0, 9)] == [0.0, 0.0] and [decoder(s) for s in (0, 9)] == [1, 1]
    assert pruner(10) == 1.0 and decoder(10) == pytest.approx(0.1)
    assert pruner(60) == pytest.approx(0.5) and decoder(60) == pytest.approx(0.05)   # cosine
    assert pruner(110) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="decoder_warmup_steps < max_steps"):
        TrainConfig(model="m", data="d", out="o", max_steps=10, decoder_warmup_steps=10)
    no_decoder = TrainConfig(model="m", data="d", out="o", mode="mask_prediction")
    assert no_decoder.decoder_warmup_steps == 0
