"""WGAN-GP and ψ against values computed by hand."""

import math

import pytest
import torch

from depthlab.nn.losses import (
    critic_risk,
    gaussian_highpass,
    gradient_penalty,
    grayscale,
    psi,
    psi_distance,
)


def linear_critic(weight: float):
    """f(x) = weight · sum(x) per sample: ∇f = weight at every pixel."""
    return lambda x: weight * x.flatten(1).sum(1, keepdim=True)


def patch_critic(weight: float):
    """A 'PatchGAN' whose map is weight · x itself."""
    return lambda x: weight * x


@pytest.mark.parametrize("weight, one_sided, expected", [
    (0.5, True, 0.0),  # 4 pixels: ‖∇‖ = sqrt(4·0.25) = 1
    (1.0, True, 1.0),  # ‖∇‖ = 2 → (2 − 1)² = 1
    (0.25, True, 0.0),  # ‖∇‖ = 0.5 < 1: one-sided ignores it
    (0.25, False, 0.25),  # two-sided: (0.5 − 1)² = 0.25
])
def test_gradient_penalty_of_a_linear_critic(weight, one_sided, expected):
    real, fake = torch.rand(3, 1, 2, 2), torch.rand(3, 1, 2, 2)
    gp = gradient_penalty(linear_critic(weight), real, fake, one_sided=one_sided)
    assert gp.item() == pytest.approx(expected, abs=1e-6)


def test_gradient_penalty_of_a_patch_map_mean_vs_sum():
    real, fake = torch.rand(2, 1, 2, 2), torch.rand(2, 1, 2, 2)
    # mean over 4 patches of 4·x: ∂/∂x = 1 per pixel → ‖∇‖ = 2 → 1
    assert gradient_penalty(patch_critic(4.0), real, fake).item() == pytest.approx(1.0)
    # the code's sum: ∂/∂x = 4 per pixel → ‖∇‖ = 8 → 49
    assert gradient_penalty(patch_critic(4.0), real, fake, patch_sum=True).item() == (
        pytest.approx(49.0))


def test_critic_risk_is_eq2():
    real, fake = torch.full((2, 1, 2, 2), 1.0), torch.full((2, 1, 2, 2), 3.0)
    risk, wasserstein = critic_risk(linear_critic(1.0), real, fake, penalty=100.0)
    # mean f(fake) − mean f(real) = 12 − 4 = 8; GP = (2 − 1)² = 1 → 8 + 100
    assert risk.item() == pytest.approx(108.0)
    assert wasserstein.item() == pytest.approx(-8.0)


def test_gradient_penalty_reaches_critic_weights():
    critic = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.constant_(critic.weight, 3.0)
    gradient_penalty(critic, torch.rand(2, 1, 2, 2), torch.rand(2, 1, 2, 2)).backward()
    # GP = (‖∇‖ − 1)² with ‖∇‖ = 3·2/4·... : just non-zero and finite
    assert critic.weight.grad is not None and torch.isfinite(critic.weight.grad).all()
    assert critic.weight.grad.abs().item() > 0


def test_grayscale_uses_the_papers_weights():
    blue = torch.zeros(1, 3, 1, 1)
    blue[:, 2] = 1.0
    assert grayscale(blue).item() == pytest.approx(0.144)  # as printed in the paper
    assert grayscale(blue, (0.299, 0.587, 0.114)).item() == pytest.approx(0.114)


def test_highpass_values():
    h = gaussian_highpass((16, 16), sigma=4.0)
    assert h[0, 0].item() == 0.0  # the zero frequency is removed
    assert h[0, 4].item() == pytest.approx(1 - math.exp(-16 / 32))
    assert h[3, 4].item() == pytest.approx(1 - math.exp(-25 / 32))
    assert h[0, 4].item() == pytest.approx(h[0, -4].item())  # symmetric


def test_psi_of_a_flat_image_is_zero():
    flat = torch.full((2, 3, 8, 8), 0.3)  # any constant: gamma maps it to 10^−0.3
    assert psi(flat).abs().max().item() < 1e-5


def test_psi_of_a_cosine_is_the_filtered_cosine():
    # mean gray m = 10^−0.3 makes Γ = −0.3·ln10 / ln m = 1, so ψ = H(k)·(g − m)
    size, k, amplitude = 32, 4, 0.2
    m = 10**-0.3
    x = torch.arange(size, dtype=torch.float64)
    wave = amplitude * torch.cos(2 * math.pi * k * x / size)
    gray = (m + wave).expand(size, size)
    image = (2 * gray - 1).expand(1, 3, size, size).float()
    out = psi(image, sigma=4.0, weights=(0.299, 0.587, 0.114))
    expected = (1 - math.exp(-k**2 / 32)) * wave
    assert torch.allclose(out[0, 0].double(), expected.expand(size, size), atol=1e-4)


def test_psi_ignores_brightness_and_colour_but_not_structure():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32) * 0.5 - 0.25
    tinted = image * torch.tensor([1.0, 0.9, 0.8]).view(1, 3, 1, 1)
    other = torch.rand(1, 3, 32, 32) * 0.5 - 0.25
    assert psi_distance(tinted, image).item() < 0.5 * psi_distance(other, image).item()
