"""Noise schedules and the DDPM/DDIM algebra, written out.

Indexing follows the papers: t = 0 is the clean image and t = 1..T are the noisy steps,
so every table below has T + 1 entries with ᾱ_0 = 1. diffusers indexes the same steps
0..T-1; its ``alphas_cumprod[k]`` is our ``alpha_bar[k + 1]`` (tests check this).

References: DiffusionAD (arXiv 2303.08730) Eq. 1-5; DeCo-Diff (arXiv 2503.19357) Eq. 1-6;
DDPM (Ho et al. 2020, DiffusionAD's [21]); improved DDPM (Nichol & Dhariwal 2021) for the
squared-cosine schedule used by DeCo-Diff; DDIM (Song et al. 2021) for the deterministic step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "NoiseSchedule",
    "cosine_betas",
    "ddim_step",
    "ddpm_sample",
    "ddpm_step",
    "denoising_loss",
    "equivalent_step",
    "linear_betas",
    "make_schedule",
    "predict_x0",
    "q_posterior",
    "q_sample",
    "q_step",
    "vlb_term",
]

VARIANCES = ("posterior", "beta")  # σ_t² of the reverse step: β̃_t or β_t (DDPM §3.2)


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """β_1..β_T rising linearly (DDPM; DiffusionAD §3.1, T = 1000).

    The DiffusionAD text says β_T = 10⁻², but cites DDPM [21], whose value (and the official
    code's) is 0.02; 0.02 is the default here.
    """
    _check_T(T)
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int = 10, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """β_1..β_T of the squared-cosine schedule (Nichol & Dhariwal Eq. 17; DeCo-Diff §5, T = 10).

    ᾱ(τ) = cos²((τ + s)/(1 + s) · π/2) on τ ∈ [0, 1]; β_t = 1 - ᾱ(t/T)/ᾱ((t-1)/T), clipped
    at ``max_beta`` so the last step stays finite (diffusers' ``squaredcos_cap_v2``).
    """
    _check_T(T)
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clamp(1 - f[1:] / f[:-1], max=max_beta)


def _check_T(T: int) -> None:
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T (number of diffusion steps) must be a positive int, got {T!r}")


@dataclass(frozen=True)
class NoiseSchedule:
    """All per-step constants of a schedule, indexed by t = 0..T (float64)."""

    betas: Tensor  # β_t, with β_0 = 0
    alphas: Tensor  # α_t = 1 - β_t
    alpha_bar: Tensor  # ᾱ_t = ∏_{i≤t} α_i (DiffusionAD Eq. 1), ᾱ_0 = 1
    posterior_variance: Tensor  # β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t (Eq. 4), β̃_0 = 0

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a non-empty sequence with every β_t in (0, 1)")
        betas = torch.cat([betas.new_zeros(1), betas])
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        post_var = torch.zeros_like(betas)
        post_var[1:] = (1 - alpha_bar[:-1]) / (1 - alpha_bar[1:]) * betas[1:]
        return cls(betas, alphas, alpha_bar, post_var)

    @property
    def T(self) -> int:
        return self.betas.numel() - 1

    def snr(self) -> Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t); infinite at t = 0."""
        return self.alpha_bar / (1 - self.alpha_bar)


def equivalent_step(s: NoiseSchedule, t: int, scale: float) -> int:
    """The step t' at which data of unit amplitude is corrupted as much as data scaled by
    ``scale`` is at step t: Eq. 2 on s·x gives √ᾱ_t s x + √(1-ᾱ_t) ε, whose signal-to-noise
    ratio is s² ᾱ_t / (1-ᾱ_t); t' is the step whose SNR is nearest to it (in log). Images in
    [0, 1] (the official DiffusionAD code) are ``scale = 0.5`` of images in [-1, 1]: their
    λ = 100 / 200 corrupt as λ' = equivalent_step(s, λ, 0.5) = 190 / 331 would in [-1, 1]."""
    if not 1 <= t <= s.T:
        raise ValueError(f"t must be a step in 1..{s.T}, got {t}")
    log_snr = s.snr()[1:].double().log()  # steps 1..T
    target = math.log(scale**2) + float(log_snr[t - 1])
    return 1 + int((log_snr - target).abs().argmin())


def make_schedule(kind: str = "linear", T: int | None = None, **kwargs: float) -> NoiseSchedule:
    """``"linear"`` (DiffusionAD, T = 1000) or ``"cosine"`` (DeCo-Diff, T = 10)."""
    if kind == "linear":
        return NoiseSchedule.from_betas(linear_betas(1000 if T is None else T, **kwargs))
    if kind == "cosine":
        return NoiseSchedule.from_betas(cosine_betas(10 if T is None else T, **kwargs))
    raise ValueError(f"schedule kind must be 'linear' or 'cosine', got {kind!r}")


def _at(table: Tensor, t: Tensor | int, like: Tensor) -> Tensor:
    """table[t] cast to ``like``'s dtype/device, shaped to broadcast over a batch."""
    t = torch.as_tensor(t, device=table.device)
    if bool(((t < 0) | (t >= table.numel())).any()):
        raise ValueError(f"timestep t must lie in 0..{table.numel() - 1}, got {t.tolist()}")
    v = table[t].to(device=like.device, dtype=like.dtype)
    return v.reshape(-1, *([1] * (like.dim() - 1))) if v.dim() else v


def q_step(x_prev: Tensor, t: Tensor | int, s: NoiseSchedule, noise: Tensor) -> Tensor:
    """One forward step q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I) (DDPM Eq. 2)."""
    return _at(s.alphas, t, x_prev).sqrt() * x_prev + _at(s.betas, t, x_prev).sqrt() * noise


def q_sample(x0: Tensor, t: Tensor | int, s: NoiseSchedule, noise: Tensor) -> Tensor:
    """Jump straight to step t: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε (DiffusionAD Eq. 2)."""
    ab = _at(s.alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def predict_x0(xt: Tensor, t: Tensor | int, s: NoiseSchedule, eps: Tensor) -> Tensor:
    """One-step estimate x̂_0 = (x_t - √(1-ᾱ_t) ε_θ) / √ᾱ_t (DiffusionAD Eq. 5)."""
    ab = _at(s.alpha_bar, t, xt)
    return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()


def q_posterior(x0: Tensor, xt: Tensor, t: Tensor | int, s: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """The forward process reversed given x_0: q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (DDPM
    Eq. 6-7), μ̃_t = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t. The target
    each KL term of the variational bound (DeCo-Diff Eq. 5) compares p_θ(x_{t-1} | x_t) with.
    Returns (μ̃_t, β̃_t broadcast to a batch)."""
    t = torch.as_tensor(t)
    ab, ab_prev = _at(s.alpha_bar, t, xt), _at(s.alpha_bar, t - 1, xt)
    beta, alpha = _at(s.betas, t, xt), _at(s.alphas, t, xt)
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * xt
    return mean, _at(s.posterior_variance, t, xt)


def ddpm_step(
    xt: Tensor,
    t: Tensor | int,
    s: NoiseSchedule,
    eps: Tensor,
    noise: Tensor | None = None,
    variance: str = "posterior",
) -> Tensor:
    """One ancestral step x_t → x_{t-1} (DiffusionAD Eq. 4; DeCo-Diff Eq. 3-4; DDPM Alg. 2).

    x_{t-1} = μ_θ + σ_t z with μ_θ = (x_t - (1-α_t)/√(1-ᾱ_t) ε_θ) / √α_t (DeCo-Diff Eq. 4)
    and σ_t² = β̃_t (``variance="posterior"``, DiffusionAD Eq. 4; the paper prints "+ β̃_t z"
    but the standard deviation is √β̃_t) or σ_t² = β_t (``"beta"``, DeCo-Diff Eq. 3). DDPM
    found both work: they are the two bounds on the true reverse variance. ``noise`` is z;
    None returns the mean μ_θ. With σ_t² = β̃_t the step at t = 1 is deterministic.
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    a, ab = _at(s.alphas, t, xt), _at(s.alpha_bar, t, xt)
    mean = (xt - (1 - a) / (1 - ab).sqrt() * eps) / a.sqrt()
    if noise is None:
        return mean
    var = s.posterior_variance if variance == "posterior" else s.betas
    return mean + _at(var, t, xt).sqrt() * noise


def vlb_term(x0: Tensor, xt: Tensor, t: Tensor | int, s: NoiseSchedule, eps: Tensor) -> Tensor:
    """One KL term of the variational bound (DeCo-Diff Eq. 5, DDPM's L_{t-1}), per sample:
    D_KL(q(x_{t-1} | x_t, x_0) ‖ p_θ(x_{t-1} | x_t)) with p_θ's mean from the noise estimate
    ``eps`` (DeCo-Diff Eq. 4) and both variances β̃_t, so the KL of two Gaussians reduces to
    ‖μ̃_t - μ_θ‖² / (2β̃_t), summed over every dimension but the first (the batch). For t ≥ 2
    (β̃_1 = 0: the bound's first term is the decoder's likelihood instead)."""
    if xt.dim() < 2:
        raise ValueError(f"vlb_term takes a batch (B, ...), got shape {tuple(xt.shape)}")
    mu_q, var = q_posterior(x0, xt, t, s)
    mu_p = ddpm_step(xt, t, s, eps)
    return ((mu_q - mu_p) ** 2 / (2 * var)).flatten(1).sum(1)


def denoising_loss(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    s: NoiseSchedule,
    g: torch.Generator,
) -> Tensor:
    """One Monte Carlo draw of the DDPM objective, per sample (DiffusionAD Eq. 3, DeCo-Diff
    Eq. 6): t ~ U{1..T} and ε ~ N(0, I) for each sample of ``x0``, then the mean over
    elements of (ε - ε_θ(x_t, t))², x_t from Eq. 2. Averaging over many samples estimates
    the expectation; ``eps_model(x, t)`` takes a (B,) tensor of steps. Returns (B,)."""
    t = torch.randint(1, s.T + 1, (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    xt = q_sample(x0, t, s, eps)
    return (eps - eps_model(xt, t)).pow(2).flatten(1).mean(1)


def ddim_step(
    xt: Tensor,
    t: Tensor | int,
    t_prev: Tensor | int,
    s: NoiseSchedule,
    eps: Tensor,
) -> Tensor:
    """Deterministic DDIM step (η = 0) from t to any earlier t_prev (DDIM Eq. 12).

    x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}) ε_θ, with x̂_0 from Eq. 5: re-noise the one-step
    estimate to level t' along the same ε. t_prev = 0 returns x̂_0 itself.
    """
    x0_hat = predict_x0(xt, t, s, eps)
    ab_prev = _at(s.alpha_bar, t_prev, xt)
    return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps


@torch.no_grad()
def ddpm_sample(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    xt: Tensor,
    t: int,
    s: NoiseSchedule,
    g: torch.Generator | None = None,
) -> Tensor:
    """The full reverse chain x_t → x_0 by ``ddpm_step`` (DiffusionAD Eq. 4 applied t times,
    DDPM Algorithm 2): the multi-step reconstruction that DiffusionAD's one step (Eq. 5)
    replaces. ``eps_model(x, t)`` predicts ε for a batch at timestep t (a (B,) tensor); ``g``
    draws the noise z of each step. Returns x_0 clipped to [-1, 1]."""
    for k in range(t, 0, -1):
        tt = torch.full((len(xt),), k, device=xt.device)
        z = torch.randn(xt.shape, generator=g).to(xt)
        xt = ddpm_step(xt, k, s, eps_model(xt, tt), noise=z)
    return xt.clamp(-1, 1)
