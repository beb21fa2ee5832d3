"""Adversarial foreground-background reconstruction (AFBR), FastDriveVLA Eq. 3-8.

    M_i     = 1[S_i > 0]                                   (3)
    M~      = S + sg(M - S)                                (4)  straight-through estimator
    V_fore  = M~ ⊙ V,   V_back = (1 - M~) ⊙ V              (5)
    I_pred  = D(V_fore), D(V_back)                         (6)
    L       = λ (1 - SSIM(I_gt, I_pred)) + (1 - λ) MSE     (7)  per branch, λ = 0.2
    L_all   = α L_fore + (1 - α) L_back                    (8)  α = 0.5

with I_fore_gt = I ⊙ M_fg and I_back_gt = I ⊙ (1 - M_fg) (pixels outside the mask zeroed), I the
processor-resized image in [0, 1] and M_fg the foreground mask at that size. Reconstructing the
background from the low-score tokens is what keeps the scorer from calling everything foreground.

Padding (Eq. 5): the tokens a branch does not get are one learned padding token shared by both
branches (`padding='learned'`, the default, as MAE's mask token) or zeros (`'zero'`, the paper's
"typically zeros"). Only the ranking of S is used at inference, so the fraction of tokens with
S > 0 is a training monitor: near 0 or 1 means one branch receives (almost) nothing.

Why not zeros, and why a decoder warm-up (measured on the tiny model, see the issue note). The STE
slope dL/dM~_i = <dL/dV_x,i, V_i - pad> is a linearisation of the decoder's response to token i.
Qwen's layers RMS-normalise their input, so with zero padding that response is a step at M = 0
(a token is either absent or, at any scale, fully present): the slope is ~0 where the token is
present and dominated by 1/sqrt(eps) where it is absent, and its sign agreed with the true
effect of flipping the token for only 28-51% of tokens. A learned padding token makes the path
from "absent" to "present" a direction change the slope can see. Two more things keep the
decoder from solving the task itself (suppressing foreground tokens in the background branch,
which removes the scorer's incentive, or collapsing to all-background):
  * `warmup_loss`: before the scorer trains, the decoder learns to reconstruct exactly the tokens
    it is given, on RANDOM token splits (MAE-style masking; split and target mask are the same);
  * the trainer then moves the decoder at a smaller learning rate than the scorer (two time
    scales, as in GAN training), `decoder_lr_scale`.

Ablations (paper Table 2), selected by `mode`:
  'afbr'             the method;
  'foreground_only'  only L_fore (pixel reconstruction of the foreground, no adversarial branch);
  'mask_prediction'  no decoder: the scores themselves are trained to predict each token's
                     foreground fraction (binary cross-entropy on S as logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastdrivevla_ros.errors import ConfigError
from fastdrivevla_ros.pruning.recon import ReconPruner, grid_position_ids
from fastdrivevla_ros.training import MODES
from fastdrivevla_ros.training.decoder import PATCH, ReconDecoder, unpatchify


def ste_mask(s: torch.Tensor) -> torch.Tensor:
    """Eq. 3-4. s: [B, N] scores -> M~ [B, N]: exactly M = 1[S > 0] in the forward pass, dM~/dS = 1
    in the backward pass. Written as M + (S - sg(S)), which equals S + sg(M - S) but is exactly
    binary in floating point (S - S is 0 exactly; S + (M - S) need not be M)."""
    m = (s > 0).to(s.dtype)
    return m + (s - s.detach())


def split_tokens(v: torch.Tensor, m: torch.Tensor, pad: torch.Tensor | None = None):
    """Eq. 5. v: [B, N, D], m: [B, N] -> (V_fore, V_back), each [B, N, D]; the tokens a branch
    does not get are replaced by zeros (pad None, the paper's choice) or by `pad` [D]."""
    m = m[..., None].to(v.dtype)
    if pad is None:
        return m * v, (1 - m) * v
    pad = pad.to(v.dtype)
    return m * v + (1 - m) * pad, (1 - m) * v + m * pad


def reconstruction_loss(pred: torch.Tensor, gt: torch.Tensor, lam: float = 0.2) -> dict:
    """Eq. 7. pred, gt: [B, C, H, W] with gt in [0, 1] -> {'loss', 'ssim', 'mse'} (scalars).
    SSIM is pytorch-msssim's (Gaussian window 11, sigma 1.5, data range 1)."""
    from pytorch_msssim import ssim

    s = ssim(pred.float(), gt.float(), data_range=1.0, size_average=True)
    mse = F.mse_loss(pred.float(), gt.float())
    return {"loss": lam * (1 - s) + (1 - lam) * mse, "ssim": s, "mse": mse}


def token_foreground(mask: torch.Tensor) -> torch.Tensor:
    """mask: [B, 1, H, W] in {0, 1} at the resized size -> [B, N] fraction of foreground pixels
    under each 28x28 token (raster order)."""
    return F.avg_pool2d(mask.float(), PATCH).flatten(1)


def foreground_coverage(scores: torch.Tensor, token_fg: torch.Tensor, ratio: float = 0.5) -> float:
    """Share of foreground tokens among the top K = floor(N (1 - ratio)) scores.
    scores, token_fg: [N] (token_fg bool). NaN if the image has no foreground token."""
    from fastdrivevla_ros.pruning.base import budget

    n_fg = int(token_fg.sum())
    if n_fg == 0:
        return float("nan")
    top = torch.topk(scores.float(), budget(len(scores), ratio)).indices
    return float(token_fg[top].sum()) / n_fg


class AFBRModel(nn.Module):
    """ReconPruner + reconstruction decoder, trained end to end (the vision encoder is frozen
    outside). forward(v, image, mask, grid) -> dict of losses and monitors."""

    def __init__(self, pruner: ReconPruner, decoder: ReconDecoder | None, mode: str = "afbr",
                 lam: float = 0.2, alpha: float = 0.5, padding: str = "learned"):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if mode != "mask_prediction" and decoder is None:
            raise ConfigError(f"mode {mode!r} needs a reconstruction decoder")
        if padding not in ("zero", "learned"):
            raise ConfigError(f"padding must be 'zero' or 'learned', got {padding!r}")
        if not (0 <= lam <= 1 and 0 <= alpha <= 1):
            raise ConfigError(f"lambda and alpha must be in [0, 1], got {lam}, {alpha}")
        self.pruner, self.decoder = pruner, decoder
        self.mode, self.lam, self.alpha = mode, float(lam), float(alpha)
        self.pad = (nn.Parameter(torch.randn(pruner.config.hidden_size) * 0.02)
                    if padding == "learned" else None)

    def forward_encoder(self, v: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Eq. 1-2. v: [B, N, D] frozen visual tokens; positions: [3, N] -> S [B, N]."""
        return self.pruner(v, positions)

    def forward_masking(self, v: torch.Tensor, s: torch.Tensor):
        """Eq. 3-5. -> (V_fore [B, N, D], V_back [B, N, D], M~ [B, N])."""
        m = ste_mask(s)
        v_fore, v_back = split_tokens(v, m, self.pad)
        return v_fore, v_back, m

    def forward_decoder(self, v_x: torch.Tensor, positions: torch.Tensor,
                        grid: tuple[int, int]) -> torch.Tensor:
        """Eq. 6. v_x: [B, N, D] -> reconstructed image [B, C, rows*28, cols*28]."""
        return unpatchify(self.decoder(v_x, positions), grid)

    def forward_loss(self, pred_fore: torch.Tensor, pred_back: torch.Tensor | None,
                     image: torch.Tensor, mask: torch.Tensor) -> dict:
        """Eq. 7-8. pred_*: [B, 3, H, W]; image: [B, 3, H, W] in [0, 1]; mask: [B, 1, H, W]."""
        fore = reconstruction_loss(pred_fore, image * mask, self.lam)
        out = {"loss_fore": fore["loss"], "ssim_fore": fore["ssim"], "mse_fore": fore["mse"]}
        if pred_back is None:        # 'foreground_only' ablation
            out["loss"] = fore["loss"]
            return out
        back = reconstruction_loss(pred_back, image * (1 - mask), self.lam)
        out.update(loss_back=back["loss"], ssim_back=back["ssim"], mse_back=back["mse"],
                   loss=self.alpha * fore["loss"] + (1 - self.alpha) * back["loss"])
        return out

    def warmup_loss(self, v: torch.Tensor, image: torch.Tensor, grid: tuple[int, int],
                    generator: torch.Generator | None = None) -> dict:
        """Decoder warm-up (no scorer): split the tokens at random (p = 1/2 each) and ask for the
        pixels of exactly the given tokens in each branch, with the AFBR loss (Eq. 7-8) and the
        random split as the mask. Teaches D to reconstruct what it receives, so that the scorer's
        split is what decides the AFBR loss once the scorer trains. Same shapes as `forward`."""
        if self.decoder is None:
            raise ConfigError("the decoder warm-up needs a reconstruction decoder")
        b, n = v.shape[:2]
        m = (torch.rand(b, n, generator=generator) < 0.5).to(v.device, v.dtype)  # CPU generator
        positions = grid_position_ids(grid, device=v.device)
        pred_fore, pred_back = self.forward_decoder(torch.cat(split_tokens(v, m, self.pad)),
                                                    positions, grid).chunk(2)
        token_mask = m.reshape(b, 1, *grid).repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
        return self.forward_loss(pred_fore, pred_back, image, token_mask)

    def forward(self, v: torch.Tensor, image: torch.Tensor, mask: torch.Tensor,
                grid: tuple[int, int], warmup: torch.Generator | None = None) -> dict:
        """v: [B, N, D]; image: [B, 3, H, W] in [0, 1]; mask: [B, 1, H, W] in {0, 1};
        grid: (rows, cols) with N = rows*cols, H = 28 rows, W = 28 cols.
        warmup: a generator -> the decoder warm-up loss (`warmup_loss`) instead.
        Returns 'loss' plus monitors: loss terms, 'fg_fraction' (share of tokens with S > 0, to
        catch the all-foreground / all-background collapse), 'scores' [B, N] (detached)."""
        if warmup is not None:
            return self.warmup_loss(v, image, grid, warmup)
        positions = grid_position_ids(grid, device=v.device)
        s = self.forward_encoder(v, positions)
        stats = {"fg_fraction": (s > 0).float().mean().detach(), "scores": s.detach()}
        if self.mode == "mask_prediction":
            target = token_foreground(mask)
            loss = F.binary_cross_entropy_with_logits(s.float(), target)
            return {"loss": loss, "loss_mask": loss.detach(), **stats}
        v_fore, v_back, _ = self.forward_masking(v, s)
        if self.mode == "foreground_only":
            pred_fore, pred_back = self.forward_decoder(v_fore, positions, grid), None
        else:   # both branches through D in one batch
            pred = self.forward_decoder(torch.cat([v_fore, v_back]), positions, grid)
            pred_fore, pred_back = pred.chunk(2)
        return {**self.forward_loss(pred_fore, pred_back, image, mask), **stats}
