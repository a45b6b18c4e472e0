"""Pure loss functions. Paper 004 (Angermann et al.): WGAN-GP critic risk (Eq. 2),
adversarial risk (Eq. 3), the ψ operator and the perceptual reconstruction risk (Eq. 5).
Paper 001 (Das et al.): masked MSE and the set loss over flipped copies (at the end).
Paper 000 (Chu et al., pix2pixHD): LSGAN, feature matching and the VGG loss (at the end)."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

PAPER_GRAY_WEIGHTS = (0.299, 0.587, 0.144)  # as printed in the paper (0.144 is a typo of 0.114)


def per_sample_score(score: Tensor) -> Tensor:
    """Critic output → one value per sample: a PatchGAN map is averaged over its patches."""
    return score.flatten(1).mean(1)  # (B,)


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     one_sided: bool = True, patch_sum: bool = False) -> Tensor:
    """Mean over the batch of (max(0, ‖∇f(ỹ)‖₂ − 1))², ỹ = ε·fake + (1−ε)·real, one ε per sample.

    f is the per-sample score that Eq. 2 uses (a PatchGAN map averaged over its
    patches), the norm over C, H, W per sample. `patch_sum=True` differentiates
    the map's sum instead, as the authors' code does (a PatchGAN with N patches
    is then held to 1/N-Lipschitz). `one_sided=False` is Gulrajani et al.'s.
    """
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device,
                     dtype=real.dtype)
    mixed = (eps * fake.detach() + (1 - eps) * real.detach()).requires_grad_(True)
    score = critic(mixed)
    score = score.flatten(1).sum(1) if patch_sum else per_sample_score(score)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    excess = grad.flatten(1).norm(2, dim=1) - 1
    if one_sided:
        excess = excess.clamp(min=0)
    return (excess**2).mean()


def critic_risk(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, penalty: float,
                drift: float = 0.0, patch_sum: bool = False) -> tuple[Tensor, Tensor]:
    """Eq. 2: mean f(fake) − mean f(real) + p·GP (+ the code's optional drift term).

    Returns (risk, wasserstein estimate mean f(real) − mean f(fake)).
    """
    real_score = per_sample_score(critic(real))
    fake_score = per_sample_score(critic(fake.detach()))
    wasserstein = real_score.mean() - fake_score.mean()
    risk = -wasserstein + penalty * gradient_penalty(critic, real, fake, patch_sum=patch_sum)
    if drift:
        risk = risk + drift * (real_score.pow(2).mean() + fake_score.pow(2).mean())
    return risk, wasserstein.detach()


def adversarial_risk(critic: Callable[[Tensor], Tensor], fake: Tensor) -> Tensor:
    """Eq. 3: −mean f(G(x))."""
    return -per_sample_score(critic(fake)).mean()


def grayscale(image: Tensor, weights: tuple[float, float, float] = PAPER_GRAY_WEIGHTS) -> Tensor:
    """(B, 3, H, W) in [0, 1] → (B, 1, H, W), the paper's g without the /255 (inputs are [0, 1])."""
    w = torch.tensor(weights, device=image.device, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def auto_gamma(gray: Tensor, clip: tuple[float, float] | None = None) -> Tensor:
    """Γ = −0.3·2.303 / ln(mean gray) per sample, (B, 1, 1, 1), without gradient.

    `clip` bounds the mean before the log (the authors' code uses (0.032, 0.871));
    None keeps the paper's formula and only guards the log's domain.
    """
    mean = gray.detach().mean(dim=(1, 2, 3), keepdim=True)
    lo, hi = clip if clip is not None else (1e-6, 1 - 1e-6)
    return -0.3 * math.log(10) / torch.log(mean.clamp(lo, hi))


def gaussian_highpass(size: tuple[int, int], sigma: float, device=None) -> Tensor:
    """H^σ_ij = 1 − exp(−‖(i, j) − centre‖² / (2σ²)) on the unshifted FFT grid, (H, W).

    The paper centres H on the shifted spectrum; putting the zero frequency at
    index 0 (torch's layout) is the same filter without the two shifts.
    """
    fy = torch.fft.fftfreq(size[0], 1 / size[0], device=device)
    fx = torch.fft.fftfreq(size[1], 1 / size[1], device=device)
    radius2 = fy[:, None] ** 2 + fx[None, :] ** 2
    return 1 - torch.exp(-radius2 / (2 * sigma**2))


def psi(image: Tensor, sigma: float = 4.0, weights=PAPER_GRAY_WEIGHTS,
        gamma_clip: tuple[float, float] | None = None, magnitude: bool = False) -> Tensor:
    """ψ(x) = h ∗ g(x)^Γ(g(x)) for x in [−1, 1]: removes brightness, colour and lighting.

    The filtered image is the real part of the inverse FFT (the filter is
    real and symmetric); `magnitude=True` takes |·| as the authors' code does.
    """
    gray = grayscale((image + 1) / 2, weights).clamp_min(1e-6)  # (B, 1, H, W)
    enhanced = gray ** auto_gamma(gray, gamma_clip)
    spectrum = torch.fft.fft2(enhanced.float())
    filtered = torch.fft.ifft2(spectrum * gaussian_highpass(image.shape[-2:], sigma, image.device))
    return filtered.abs() if magnitude else filtered.real


def psi_distance(reconstruction: Tensor, image: Tensor, normalised: bool = False,
                 **psi_options) -> Tensor:
    """MAE between ψ of a reconstruction and ψ of the input.

    `normalised=True` is the authors' code: 0.5·mean|Δψ| / mean ψ(x), per sample.
    """
    target, recon = psi(image, **psi_options), psi(reconstruction, **psi_options)
    if not normalised:
        return F.l1_loss(recon, target)
    per_sample = (recon - target).abs().flatten(1).mean(1)
    # mean |ψ(x)| equals the code's mean ψ(x) for its magnitude output and stays
    # meaningful for the real-part output, whose mean is ~0 after the high-pass
    scale = target.abs().flatten(1).mean(1).clamp_min(1e-8)
    return (0.5 * per_sample / scale).mean()


# Paper 000 (Chu et al., pix2pixHD): LSGAN, discriminator feature matching, VGG perceptual loss.
# A multiscale discriminator's output is a list (per scale) of lists (per layer, last = scores).

PIX2PIXHD_VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # relu1_1 … relu5_1


def _score_maps(prediction: Tensor | list) -> list[Tensor]:
    """The patch-score map of each scale: a tensor, one D's layer list, or a list of those."""
    if isinstance(prediction, Tensor):
        return [prediction]
    if prediction and isinstance(prediction[0], list | tuple):
        return [scale[-1] for scale in prediction]
    return [prediction[-1]]


def lsgan_loss(prediction: Tensor | list, target_is_real: bool) -> Tensor:
    """pix2pixHD's GANLoss(use_lsgan): MSE of each scale's scores to 1 (real) or 0, summed."""
    target = 1.0 if target_is_real else 0.0
    return sum(F.mse_loss(s, torch.full_like(s, target)) for s in _score_maps(prediction))


def feature_matching_loss(fake_outputs: list[list[Tensor]], real_outputs: list[list[Tensor]],
                          n_layers: int) -> Tensor:
    """Σ_scales Σ_layers (1/num_D)·(4/(n_layers+1))·L1(D(fake), D(real).detach()), scores excluded.

    λ_feat (10 in pix2pixHD) is the caller's; n_layers is the discriminator's n_layers_D.
    """
    if len(fake_outputs) != len(real_outputs) or not fake_outputs:
        raise ValueError(f"feature matching needs the same number of scales (≥ 1) for fake and "
                         f"real, got {len(fake_outputs)} and {len(real_outputs)}")
    for fake, real in zip(fake_outputs, real_outputs, strict=True):
        if len(fake) != n_layers + 2 or len(real) != n_layers + 2:
            raise ValueError(f"an n_layers={n_layers} discriminator returns {n_layers + 2} outputs "
                             f"per scale, got {len(fake)} (fake) and {len(real)} (real)")
    weight = (1.0 / len(fake_outputs)) * (4.0 / (n_layers + 1))
    return weight * sum(
        F.l1_loss(f, r.detach())
        for fake, real in zip(fake_outputs, real_outputs, strict=True)
        for f, r in zip(fake[:-1], real[:-1], strict=True)
    )


def vgg_perceptual_loss(features: list[Tensor], targets: list[Tensor],
                        weights: tuple[float, ...] = PIX2PIXHD_VGG_WEIGHTS) -> Tensor:
    """pix2pixHD's VGGLoss: Σ_k w_k·L1(φ_k(fake), φ_k(real).detach()) over relu1_1 … relu5_1."""
    if not len(features) == len(targets) == len(weights):
        raise ValueError(f"VGG loss needs one target and one weight per feature map, got "
                         f"{len(features)} features, {len(targets)} targets, "
                         f"{len(weights)} weights")
    pairs = zip(weights, features, targets, strict=True)
    return sum(w * F.l1_loss(f, t.detach()) for w, f, t in pairs)


# Paper 001 (Das et al., after Li, Klein & Yao): masked MSE data term and the set loss.
# Code ↔ poster: `set_loss` ↔ L_set; `unflip(...)` ↔ g_ij (the inverse flips); E ↔ MSE.

SET_PAIR_CONVENTIONS = ("unordered", "ordered")
# Each flip is its own inverse, so one table maps into and back out of the set.
SET_TRANSFORMS = {
    "identity": lambda x: x,
    "fliplr": lambda x: x.flip(-1),
    "flipud": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-2, -1),
}


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of `values` where `valid`; 0 with a (zero) gradient where nothing is valid."""
    return torch.where(valid, values, torch.zeros_like(values)).sum() / valid.sum().clamp_min(1)


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean of (pred − target)² over the finite target pixels (NaN marks invalid depth)."""
    if pred.shape != target.shape:
        raise ValueError(f"masked_mse: pred {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} must have the same shape")
    valid = torch.isfinite(target)
    # Fill before subtracting: a NaN inside the graph would turn the masked gradient into NaN.
    target = torch.where(valid, target, torch.zeros_like(target))
    return _masked_mean((pred - target) ** 2, valid)


def set_loss(predictions_back: list[Tensor], valid: Tensor | None = None,
             pairs: str = "unordered") -> Tensor:
    """L_set over N ≥ 2 predictions already mapped back to the identity frame.

    "unordered" (the code): 1/(N−1) · Σ_{j<k} mean((D_j − D_k)²); "ordered" (the poster's
    Σ_i Σ_{j≠i}) is twice that. The mean runs over batch and pixels (the code sums
    per-image terms, the same at its batch size 1); `valid` (bool, broadcast to the
    predictions) restricts it, like the code's commented-out masked variant.
    """
    if pairs not in SET_PAIR_CONVENTIONS:
        raise ValueError(f"set_loss pairs must be one of {SET_PAIR_CONVENTIONS}, got {pairs!r}")
    n = len(predictions_back)
    if n < 2:
        raise ValueError(f"set_loss needs at least 2 predictions, got {n}")
    shape = predictions_back[0].shape
    if any(p.shape != shape for p in predictions_back):
        raise ValueError(f"set_loss predictions must share one shape, got "
                         f"{[tuple(p.shape) for p in predictions_back]}")
    if valid is not None and valid.dtype != torch.bool:
        raise ValueError(f"set_loss valid must be a bool mask, got {valid.dtype}")
    mask = None if valid is None else valid.expand(shape)

    def error(a: Tensor, b: Tensor) -> Tensor:
        squared = (a - b) ** 2
        return squared.mean() if mask is None else _masked_mean(squared, mask)

    total = sum(error(predictions_back[j], predictions_back[k])
                for j in range(n) for k in range(j + 1, n))
    return total * (2 if pairs == "ordered" else 1) / (n - 1)


def _set_names(rot180: bool) -> list[str]:
    return ["identity", "fliplr", "flipud"] + (["rot180"] if rot180 else [])


def flip_set(images: Tensor, rot180: bool = False) -> list[Tensor]:
    """(B, C, H, W) → [identity, fliplr, flipud(, rot180)] copies: the code's set (N = 3 or 4)."""
    return [SET_TRANSFORMS[name](images) for name in _set_names(rot180)]


def unflip(predictions: list[Tensor]) -> list[Tensor]:
    """Map the predictions of `flip_set`'s copies back to the identity frame (g⁻¹ of each)."""
    if len(predictions) not in (3, 4):
        raise ValueError(f"unflip expects the 3 (or 4 with rot180) predictions of flip_set, "
                         f"got {len(predictions)}")
    names = _set_names(len(predictions) == 4)
    return [SET_TRANSFORMS[name](p) for name, p in zip(names, predictions, strict=True)]
