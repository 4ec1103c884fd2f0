"""n2n_core.schedules against diffusers' schedulers and against closed forms."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from n2n_core import schedules as S


def _diffusers_float64(sched):
    """diffusers keeps its tables in float32; recompute them in float64 from the same recipe so
    the comparison tests the step formulas, not float32 rounding of the tables."""
    cfg = sched.config
    if cfg.beta_schedule == "linear":
        betas = torch.linspace(
            cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=torch.float64
        )
    else:  # squaredcos_cap_v2, written out independently of n2n_core
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        n = cfg.num_train_timesteps
        betas = torch.tensor(
            [min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64
        )
    sched.betas = betas
    sched.alphas = 1 - betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return sched


@pytest.mark.parametrize(
    ("kind", "T", "diffusers_name"),
    [
        ("linear", 1000, "linear"),
        ("cosine", 10, "squaredcos_cap_v2"),
        ("cosine", 1000, "squaredcos_cap_v2"),
    ],
)
def test_alpha_bar_matches_diffusers(kind, T, diffusers_name):
    ours = S.make_schedule(kind, T)
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=diffusers_name)
    # diffusers index k is our step t = k + 1; our t = 0 is the clean image.
    assert ours.alpha_bar[0] == 1 and ours.betas[0] == 0
    torch.testing.assert_close(ours.alpha_bar[1:], ref.alphas_cumprod.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.betas[1:], ref.betas.double(), rtol=0, atol=1e-6)


def test_cosine_T10_matches_decodiff_table():
    # research/decodiff.md lists ᾱ for the official code's t = 0..9 (our t = 1..10).
    table = [0.972, 0.899, 0.787, 0.648, 0.494, 0.341, 0.203, 0.094, 0.024, 0.0]
    ab = S.make_schedule("cosine", 10).alpha_bar[1:]
    # the table is rounded to 3 decimals ("≈"), so compare within that rounding
    torch.testing.assert_close(ab, torch.tensor(table, dtype=torch.float64), rtol=0, atol=1e-3)


def test_linear_endpoints_and_monotonicity():
    s = S.make_schedule("linear")
    assert s.T == 1000
    assert math.isclose(s.betas[1], 1e-4) and math.isclose(s.betas[-1], 0.02)
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())
    assert 0 < s.alpha_bar[-1] < 1e-4  # essentially pure noise at T


def test_posterior_variance_matches_diffusers():
    s = S.make_schedule("linear")
    ref = _diffusers_float64(DDPMScheduler(num_train_timesteps=1000))
    for t in [1, 2, 10, 500, 1000]:
        torch.testing.assert_close(
            s.posterior_variance[t], ref._get_variance(t - 1), rtol=1e-10, atol=1e-15
        )
    assert s.posterior_variance[1] == 0  # β̃_1 = 0: the last reverse step adds no noise


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_step_matches_diffusers(kind):
    T = 1000 if kind == "linear" else 10
    s = S.make_schedule(kind, T)
    ref = DDPMScheduler(
        num_train_timesteps=T,
        clip_sample=False,
        variance_type="fixed_small",
        beta_schedule="linear" if kind == "linear" else "squaredcos_cap_v2",
    )
    ref = _diffusers_float64(ref)
    g = torch.Generator().manual_seed(0)
    xt, eps = (torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    for t in sorted({1, 2, T // 2, T - 1, T}):
        # diffusers draws z itself: reproduce its draw with the same generator seed.
        out = ref.step(eps, t - 1, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t), dtype=xt.dtype)
        ours = S.ddpm_step(xt, t, s, eps, noise=z if t > 1 else None)
        torch.testing.assert_close(ours, out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("T", "n_steps"), [(1000, 50), (1000, 1000), (10, 10), (10, 5)])
def test_ddim_step_matches_diffusers(T, n_steps):
    kind = "linear" if T == 1000 else "cosine"
    s = S.make_schedule(kind, T)
    ref = DDIMScheduler(
        num_train_timesteps=T,
        clip_sample=False,
        set_alpha_to_one=True,
        beta_schedule="linear" if kind == "linear" else "squaredcos_cap_v2",
    )
    ref = _diffusers_float64(ref)
    ref.set_timesteps(n_steps)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    stride = T // n_steps
    for k in ref.timesteps[:6].tolist() + ref.timesteps[-2:].tolist():
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
        out = ref.step(eps, k, x, eta=0.0).prev_sample
        ours = S.ddim_step(x, k + 1, max(k + 1 - stride, 0), s, eps)
        torch.testing.assert_close(ours, out, rtol=1e-6, atol=1e-6)


def test_q_sample_mean_and_variance_over_many_draws():
    s = S.make_schedule("linear")
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(16, generator=g, dtype=torch.float64) * 2 - 1
    n = 200_000
    for t in [1, 100, 500, 1000]:
        xt = S.q_sample(
            x0.expand(n, -1), t, s, torch.randn(n, 16, generator=g, dtype=torch.float64)
        )
        ab = float(s.alpha_bar[t])
        se_mean = math.sqrt((1 - ab) / n)
        se_var = (1 - ab) * math.sqrt(2 / (n - 1))
        assert (xt.mean(0) - math.sqrt(ab) * x0).abs().max() < 5 * se_mean
        assert (xt.var(0) - (1 - ab)).abs().max() < 5 * se_var


def test_iterating_q_step_equals_closed_form_in_distribution():
    """t steps of q(x_t | x_{t-1}) give the same Gaussian as one jump of Eq. 2."""
    s = S.make_schedule("linear")
    g = torch.Generator().manual_seed(4)
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64)
    n, t = 100_000, 200
    x = x0.expand(n, -1).clone()
    for k in range(1, t + 1):
        x = S.q_step(x, k, s, torch.randn(x.shape, generator=g, dtype=x.dtype))
    ab = float(s.alpha_bar[t])
    assert (x.mean(0) - math.sqrt(ab) * x0).abs().max() < 5 * math.sqrt((1 - ab) / n)
    assert (x.var(0) - (1 - ab)).abs().max() < 5 * (1 - ab) * math.sqrt(2 / n)


def test_predict_x0_inverts_q_sample_with_true_noise():
    s = S.make_schedule("linear")
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(4, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 250, 700, 1000])  # a batch of different steps
    xt = S.q_sample(x0, t, s, eps)
    torch.testing.assert_close(S.predict_x0(xt, t, s, eps), x0, rtol=0, atol=1e-9)
    # DDIM to t' = 0 is exactly the one-step estimate
    torch.testing.assert_close(S.ddim_step(xt, t, 0, s, eps), S.predict_x0(xt, t, s, eps))


def test_ddpm_posterior_mean_is_the_q_posterior_mean():
    """With the true ε, Eq. 4's mean equals μ̃_t(x_t, x_0) of q(x_{t-1} | x_t, x_0) (DDPM Eq. 7)."""
    s = S.make_schedule("cosine", 10)
    g = torch.Generator().manual_seed(6)
    x0, eps = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(2))
    for t in range(1, 11):
        xt = S.q_sample(x0, t, s, eps)
        ab, ab_prev, b, a = s.alpha_bar[t], s.alpha_bar[t - 1], s.betas[t], s.alphas[t]
        mu = (ab_prev.sqrt() * b / (1 - ab)) * x0 + (a.sqrt() * (1 - ab_prev) / (1 - ab)) * xt
        torch.testing.assert_close(S.ddpm_step(xt, t, s, eps), mu, rtol=1e-9, atol=1e-9)


def test_ddpm_sample_with_an_oracle_denoiser_lands_on_x0():
    """If ε_θ always points back to one x_0 (ε = (x_t − √ᾱ_t x_0)/√(1−ᾱ_t)), every step is a
    draw from q(x_{t-1} | x_t, x_0) and the last one (σ_1 = 0, ᾱ_0 = 1) returns x_0 exactly,
    whatever the start and the noise: the 1000-step chain of notebook 06."""
    s = S.make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 1.8 - 0.9

    def oracle(x, t):
        ab = s.alpha_bar[t].view(-1, 1, 1, 1).to(x)
        return (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    for start in (1, 200, 1000):
        xt = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(S.ddpm_sample(oracle, xt, start, s, g), x0)
    # the noise enters: with a denoiser that predicts 0 two generators give two samples
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    a = S.ddpm_sample(zero, x0, 50, s, torch.Generator().manual_seed(1))
    b = S.ddpm_sample(zero, x0, 50, s, torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="T"):
        S.linear_betas(0)
    with pytest.raises(ValueError, match="kind"):
        S.make_schedule("sigmoid")
    with pytest.raises(ValueError, match=r"0\.\.1000"):
        S.q_sample(torch.zeros(1), 1001, S.make_schedule("linear"), torch.zeros(1))
    with pytest.raises(ValueError, match="betas"):
        S.NoiseSchedule.from_betas(torch.tensor([0.1, 1.0]))


def test_q_posterior_against_diffusers_and_bayes():
    """q(x_{t-1} | x_t, x_0): the mean against diffusers' fixed_small step with z = 0 fed the
    true ε, and the variance against Bayes' rule on a scalar Gaussian written out here:
    x_{t-1} ~ N(√ᾱ_{t-1} x0, 1-ᾱ_{t-1}), x_t | x_{t-1} ~ N(√α_t x_{t-1}, β_t) ⇒ the
    posterior precision is 1/(1-ᾱ_{t-1}) + α_t/β_t."""
    s = S.make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(11)
    x0, eps = (torch.randn(2, 7, generator=g, dtype=torch.float64) for _ in range(2))
    for t in (2, 10, 500, 1000):
        xt = S.q_sample(x0, t, s, eps)
        mean, var = S.q_posterior(x0, xt, t, s)
        ab_prev, a, b = s.alpha_bar[t - 1], s.alphas[t], s.betas[t]
        precision = 1 / (1 - ab_prev) + a / b
        bayes_mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * xt / b) / precision
        torch.testing.assert_close(mean, bayes_mean, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(var.expand_as(x0), (1 / precision).expand_as(x0))
        torch.testing.assert_close(S.ddpm_step(xt, t, s, eps), mean, rtol=1e-9, atol=1e-12)


def test_ddpm_step_beta_variance_matches_diffusers_fixed_large():
    """σ_t² = β_t (DeCo-Diff Eq. 3) is diffusers' "fixed_large" variance."""
    s = S.make_schedule("cosine", 10)
    ref = _diffusers_float64(
        DDPMScheduler(
            num_train_timesteps=10,
            clip_sample=False,
            variance_type="fixed_large",
            beta_schedule="squaredcos_cap_v2",
        )
    )
    g = torch.Generator().manual_seed(12)
    xt, eps = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    for t in (2, 5, 10):
        out = ref.step(eps, t - 1, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t), dtype=xt.dtype)
        ours = S.ddpm_step(xt, t, s, eps, noise=z, variance="beta")
        torch.testing.assert_close(ours, out, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="variance"):
        S.ddpm_step(xt, 2, s, eps, noise=z, variance="large")


def test_denoising_loss_reaches_the_bayes_minimum_on_gaussian_data():
    """For x0 ~ N(0, v) per element the best ε-predictor is linear,
    E[ε | x_t] = √(1-ᾱ_t) x_t / (ᾱ_t v + 1-ᾱ_t), and the Eq. 3 minimum is the mean over t of
    ᾱ_t v / (ᾱ_t v + 1-ᾱ_t). A Monte Carlo estimate must land within 4 standard errors;
    predicting ε = 0 gives E‖ε‖² per element, 1."""
    s = S.make_schedule("linear", 1000)
    v = 0.25
    ab = s.alpha_bar[1:]
    expected = float((ab * v / (ab * v + 1 - ab)).mean())

    def oracle(xt, t):
        a = s.alpha_bar[t].view(-1, 1)
        return (1 - a).sqrt() * xt / (a * v + 1 - a)

    g = torch.Generator().manual_seed(13)
    x0 = torch.randn(20000, 16, generator=g, dtype=torch.float64) * v**0.5
    losses = S.denoising_loss(oracle, x0, s, g)
    assert losses.shape == (20000,)
    se = float(losses.std()) / len(losses) ** 0.5
    assert abs(float(losses.mean()) - expected) < 4 * se
    zero = S.denoising_loss(lambda xt, t: 0 * xt, x0, s, torch.Generator().manual_seed(14))
    assert abs(float(zero.mean()) - 1) < 4 * float(zero.std()) / len(zero) ** 0.5


def test_vlb_term_is_the_kl_of_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    s = S.make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps_hat = eps + 0.2 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    for t in (2, 37, 999):
        xt = S.q_sample(x0, t, s, eps)
        mu_q, var = S.q_posterior(x0, xt, t, s)
        mu_p = S.ddpm_step(xt, t, s, eps_hat)
        sd = var.sqrt().expand_as(mu_q)
        kl = kl_divergence(Normal(mu_q, sd), Normal(mu_p, sd)).flatten(1).sum(1)
        assert torch.allclose(S.vlb_term(x0, xt, t, s, eps_hat), kl, rtol=1e-10)
        assert float(S.vlb_term(x0, xt, t, s, eps).max()) < 1e-18  # true noise: 0 up to rounding
    with pytest.raises(ValueError, match="takes a batch"):
        S.vlb_term(x0[0, 0, 0], x0[0, 0, 0], 5, s, eps[0, 0, 0])
