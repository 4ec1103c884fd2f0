"""DeCo-Diff's deviation formulation (Beizaee et al., CVPR 2025, §4), in latent space.

- ``patch_mask`` / ``shuffle_noise`` / ``masked_forward``: the masked forward process (Eq. 7)
  with patch shuffling (§4.2);
- ``dod_target``: the direction of deviation the network learns (Eq. 10-12);
- ``correct``: the deterministic deviation-correction sampler (Eq. 13-14);
- ``discrepancy_maps``: pixel, latent, arithmetic and geometric anomaly maps (Eq. 15).

Timesteps use the paper indexing t = 0..T of ``n2n_core.schedules`` (ᾱ_0 = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from n2n_core.schedules import NoiseSchedule, _at

__all__ = [
    "BOUNDARIES",
    "MAP_KINDS",
    "SHUFFLES",
    "SPACINGS",
    "STRATEGIES",
    "correct",
    "correction_timesteps",
    "discrepancy_maps",
    "dod_target",
    "gaussian_blur",
    "masked_forward",
    "patch_mask",
    "resize_maps",
    "shuffle_noise",
]

STRATEGIES = ("z_t-1", "z_0")  # Table 3: re-noise along the DoD (Eq. 14) or keep z̃0
MAP_KINDS = ("pixel", "latent", "arithmetic", "geometric")  # Table 4 (geometric = Eq. 15)


def _patch_grid(shape: tuple[int, int], patch: int) -> tuple[int, int]:
    h, w = shape
    if patch < 1 or h % patch or w % patch:
        raise ValueError(f"latent patch size {patch} must divide the latent size {h}×{w}")
    return h // patch, w // patch


def patch_mask(
    batch: int, shape: tuple[int, int], ratio: Tensor, patch: int, g: torch.Generator
) -> Tensor:
    """Noisy-patch indicator m (B, 1, H, W) for Eq. 7: for each sample a random subset of
    round(ratio · #patches) non-overlapping patch × patch patches is 1 (diffused, z^n); the
    others are 0 (visible, z^v)."""
    gh, gw = _patch_grid(shape, patch)
    n = gh * gw
    k = (ratio.reshape(-1) * n).round().long().clamp(0, n)
    rank = torch.rand(batch, n, generator=g).argsort(1).argsort(1)  # a random permutation
    m = (rank < k[:, None]).float().reshape(batch, 1, gh, gw)
    return m.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


SHUFFLES = ("next_image", "official")  # where a shuffled patch comes from (``shuffle_noise``)


def _permute_patches(z: Tensor, patch: int, g: torch.Generator) -> Tensor:
    """Every patch × patch patch of the batch moved to a random (image, position), all B · #patches
    of them permuted together (the official code's ``shuffle_patches``)."""
    b, c, h, w = z.shape
    gh, gw = _patch_grid((h, w), patch)
    p = z.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, patch, patch)
    p = p[torch.randperm(len(p), generator=g).to(z.device)]
    return p.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def shuffle_noise(
    z0: Tensor, ratio: Tensor, patch: int, g: torch.Generator, mode: str = "next_image"
) -> tuple[Tensor, Tensor]:
    """The "noise" of the masked forward process with patch shuffling (§4.2): Gaussian,
    except on a fraction ``ratio`` of patch × patch patches of each sample, which hold a patch
    of a normal image, so the model also sees structured, in-distribution-looking deviations.
    ``mode="next_image"``: the same patch of the next image (i takes it from i + 1 mod B);
    ``"official"``: a patch drawn from all patches of the batch, any image, any position.
    Returns the noise and the shuffled-patch indicator (B, 1, H, W)."""
    if mode not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {SHUFFLES}, got {mode!r}")
    b = z0.shape[0]
    noise = torch.randn(z0.shape, generator=g).to(z0)
    if b < 2 and mode == "next_image":
        return noise, torch.zeros_like(z0[:, :1])
    s = patch_mask(b, tuple(z0.shape[-2:]), ratio, patch, g).to(z0)
    donor = z0.roll(-1, 0) if mode == "next_image" else _permute_patches(z0, patch, g)
    return s * donor + (1 - s) * noise, s


def masked_forward(
    z0: Tensor, t: Tensor | int, s: NoiseSchedule, mask: Tensor, noise: Tensor
) -> Tensor:
    """Eq. 7: z_t = √ᾱ_t z0 + √(1-ᾱ_t) ε on noisy patches (mask 1), z0 on visible ones."""
    ab = _at(s.alpha_bar, t, z0)
    return mask * (ab.sqrt() * z0 + (1 - ab).sqrt() * noise) + (1 - mask) * z0


def dod_target(zt: Tensor, z0: Tensor, t: Tensor | int, s: NoiseSchedule) -> Tensor:
    """The direction of deviation δ with z_t = z0 + √(1-ᾱ_t) δ (Eq. 11), for t ≥ 1.

    On diffused patches this is ε - (1-√ᾱ_t)/√(1-ᾱ_t) · z0 (Eq. 10); on visible ones it is
    0: the network learns to leave normal patches alone. Eq. 12 regresses it with MSE."""
    ab = _at(s.alpha_bar, t, z0)
    if bool((ab >= 1).any()):
        raise ValueError("dod_target needs t ≥ 1 (at t = 0 there is no deviation to scale)")
    return (zt - z0) / (1 - ab).sqrt()


SPACINGS = ("from_start", "official")  # correction timesteps: from T down, or DDIM respacing


def correction_timesteps(
    T: int, steps: int, start: int | None = None, spacing: str = "from_start"
) -> list[int]:
    """The reverse timesteps of the correction (1-indexed). ``spacing="from_start"``: ``steps`` of
    them, evenly spaced from ``start`` (default T: the encoded test image is read as z_T, as
    the paper says) down towards 1, e.g. T=10, 5 steps → [10, 8, 6, 4, 2]. ``"official"``:
    the official code's DDIM respacing ("ddim<steps>": the smallest stride k with
    len(range(0, T, k)) = steps, 0-indexed), e.g. T=10, 5 steps → [9, 7, 5, 3, 1]."""
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if spacing == "official":
        if start is not None:
            raise ValueError("start_t is not used with the official spacing (it starts at T)")
        for k in range(1, T + 1):
            if len(range(0, T, k)) == steps:
                return [t + 1 for t in reversed(range(0, T, k))]
        raise ValueError(f"no DDIM respacing of T={T} has {steps} steps")
    start = T if start is None else start
    if not 1 <= start <= T:
        raise ValueError(f"start must be a timestep in 1..{T}, got {start}")
    if not 1 <= steps <= start:
        raise ValueError(f"steps must be in 1..{start} (the start timestep), got {steps}")
    stride = start // steps
    return [start - i * stride for i in range(steps)]


def correct(
    dod: Callable[[Tensor, Tensor], Tensor],
    z: Tensor,
    s: NoiseSchedule,
    timesteps: list[int],
    strategy: str = "z_t-1",
) -> tuple[Tensor, list[Tensor]]:
    """Deviation correction (Eq. 13-14), deterministic: no noise is ever added.

    Per step t → t' (the next timestep, 0 after the last): δ = dod(z, t);
    z̃0 = z - √(1-ᾱ_t) δ (Eq. 13); then z ← z̃0 + √(1-ᾱ_t') δ (Eq. 14, "z_t-1") or
    z ← z̃0 ("z_0", Table 3). Returns the final z̃0 and the z̃0 of every step."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    trajectory = []
    for i, t in enumerate(timesteps):
        t_next = timesteps[i + 1] if i + 1 < len(timesteps) else 0
        tt = torch.full((z.shape[0],), t, device=z.device, dtype=torch.long)
        d = dod(z, tt)
        z0_tilde = z - (1 - _at(s.alpha_bar, t, z)).sqrt() * d  # Eq. 13
        trajectory.append(z0_tilde)
        if strategy == "z_0":
            z = z0_tilde
        else:
            z = z0_tilde + (1 - _at(s.alpha_bar, t_next, z)).sqrt() * d  # Eq. 14
    return trajectory[-1], trajectory


def _symmetric_index(n: int, r: int, device: torch.device) -> Tensor:
    """Indices of a length-n axis extended by r on both sides, mirrored with the edge
    repeated (… b a | a b … y z | z y …), however large r is (scipy.ndimage's "reflect")."""
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def gaussian_blur(x: Tensor, sigma: float, mode: str = "mirror") -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) maps. ``mode="mirror"``: kernel radius ⌈4σ⌉
    capped to the map, reflect padding without the edge; ``"symmetric"``: scipy.ndimage's
    ``gaussian_filter`` (radius ⌊4σ + 0.5⌋, edge repeated, any radius), as the official code."""
    if sigma <= 0:
        return x
    if mode == "symmetric":
        r = int(4 * sigma + 0.5)
    else:
        r = min(max(1, math.ceil(4 * sigma)), x.shape[-1] - 1, x.shape[-2] - 1)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    kx, ky = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    if mode == "symmetric":
        x = x.index_select(-1, _symmetric_index(x.shape[-1], r, x.device))
        x = F.conv2d(x, kx, groups=c)
        x = x.index_select(-2, _symmetric_index(x.shape[-2], r, x.device))
        return F.conv2d(x, ky, groups=c)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), ky, groups=c)


def _linear_weights(n: int, size: int, like: Tensor) -> Tensor:
    """(size, n) bilinear resampling weights, pixel centres aligned (align_corners=False),
    samples beyond the edge mirrored (scikit-image ``resize``, order 1, mode "reflect")."""
    u = (torch.arange(size, dtype=torch.float64) + 0.5) * n / size - 0.5
    i0 = torch.floor(u).long()
    f = u - i0
    w = torch.zeros(size, n, dtype=torch.float64)
    for i, wt in ((i0, 1 - f), (i0 + 1, f)):
        i = i.abs()
        i = torch.where(i > n - 1, 2 * (n - 1) - i, i)
        w.index_put_((torch.arange(size), i), wt, accumulate=True)
    return w.to(like)


def resize_maps(x: Tensor, size: tuple[int, int], mode: str = "edge") -> Tensor:
    """Bilinear resize of (B, C, h, w) maps: ``"edge"`` as torch (edge pixels repeated),
    ``"mirror"`` as scikit-image's ``resize`` (the official code's latent map)."""
    if mode == "edge":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    wy, wx = _linear_weights(x.shape[-2], size[0], x), _linear_weights(x.shape[-1], size[1], x)
    return torch.einsum("ij,bcjk,lk->bcil", wy, x, wx)


BOUNDARIES = ("torch", "official")  # how maps meet the image border: ours, or the official code's


def discrepancy_maps(
    z0: Tensor,
    z0_tilde: Tensor,
    x0: Tensor,
    x0_tilde: Tensor,
    tau_l: float = 0.2,
    tau_p: float = 0.4,
    sigma_l: float = 1.0,
    sigma_p: float = 3.0,
    boundary: str = "torch",
) -> dict[str, Tensor]:
    """The anomaly maps of Table 4, each (B, 1, H, W) at image size, in [0, 1].

    Latent term: min(Δz, τ_l)/τ_l with Δz = |z̃0 - z0| averaged over channels, blurred
    (σ_l latent pixels) and bilinearly resized; pixel term: min(Δx, τ_p)/τ_p with Δx =
    |x̃0 - x0| max over RGB (x in [-1, 1]), blurred (σ_p image pixels). Geometric: Eq. 15,
    √(latent · pixel); arithmetic: their mean. Clipping at τ stops a few extreme deviations
    from dominating (§4.3); the channel reductions and blurs follow the official code.
    ``boundary="official"`` also treats the border exactly as the official code does
    (scipy's Gaussian filter, scikit-image's resize); ``"torch"`` (the default, what the smoke
    results were measured with) pads by mirroring without the edge and resizes like torch."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    blur_mode, resize_mode = (
        ("symmetric", "mirror") if boundary == "official" else ("mirror", "edge")
    )
    dz = (z0_tilde - z0).abs().mean(1, keepdim=True).float()
    lat = gaussian_blur(dz.clamp(max=tau_l) / tau_l, sigma_l, blur_mode)
    lat = resize_maps(lat, tuple(x0.shape[-2:]), resize_mode)
    dx = (x0_tilde - x0).abs().amax(1, keepdim=True).float()
    pix = gaussian_blur(dx.clamp(max=tau_p) / tau_p, sigma_p, blur_mode)
    lat, pix = lat.clamp(0, 1), pix.clamp(0, 1)
    return {
        "pixel": pix,
        "latent": lat,
        "arithmetic": (lat + pix) / 2,
        "geometric": (lat * pix).sqrt(),  # Eq. 15
    }
