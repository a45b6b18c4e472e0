"""Pure loss functions. Paper 004 (Angermann et al.): WGAN-GP critic risk (Eq. 2),
adversarial risk (Eq. 3), the ψ operator and the perceptual reconstruction risk (Eq. 5)."""

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
