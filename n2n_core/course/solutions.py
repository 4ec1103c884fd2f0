"""Worked solutions of the notebooks' exercises. Look after trying:
``course.solution("01.q_sample")`` prints one. Each is written from the paper's equation, the
way a student would, not copied from the library it is checked against."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


# 01 · forward diffusion
def q_sample(x0, t, alpha_bar, eps):
    """DiffusionAD Eq. 2: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
    ab = float(alpha_bar[t])
    return math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps


def predict_x0(x_t, t, alpha_bar, eps):
    """DiffusionAD Eq. 5: solve Eq. 2 for x_0."""
    ab = float(alpha_bar[t])
    return (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)


def amplification(alpha_bar_t):
    """An error δ in ε becomes √(1 − ᾱ_t)/√ᾱ_t · δ in x̂0 (Eq. 5 is linear in ε)."""
    return math.sqrt((1 - alpha_bar_t) / alpha_bar_t)


# 02 · datasets
def to_model_range(image):
    """(H, W, 3) uint8 → (3, H, W) float32 in [-1, 1]: 0 ↦ -1, 255 ↦ 1."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1


def background_colour(image, border):
    """The median colour of the ring of width ⌈border · min(H, W)⌉ around the image."""
    h, w = image.shape[:2]
    b = max(1, round(border * min(h, w)))
    ring = np.ones((h, w), dtype=bool)
    ring[b:-b, b:-b] = False
    return np.median(image[ring].astype(np.float64), axis=0)


# 03 · anomaly synthesis
def blend(normal, appearance, mask, beta):
    """DiffusionAD Eq. 9: S = β (M ⊙ N) + (1 − β)(M ⊙ A) + M̄ ⊙ N."""
    return beta * mask * normal + (1 - beta) * mask * appearance + (1 - mask) * normal


def anomaly_region(noise, threshold, foreground):
    """M = (Perlin noise > threshold) ⊙ F, as a 0/1 float mask."""
    return ((noise > threshold) & foreground.bool()).float()


# 04 · metrics
def auroc(normal, anomalous):
    """P(score of an anomalous image > score of a normal one), ties counting one half."""
    a, n = np.asarray(anomalous)[:, None], np.asarray(normal)[None, :]
    return float((a > n).mean() + 0.5 * (a == n).mean())


def pro_at(anomaly_map, mask, threshold):
    """Mean over the mask's 8-connected regions of the fraction of the region ≥ threshold."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    hit = anomaly_map >= threshold
    return float(np.mean([hit[labels == r].mean() for r in range(1, n + 1)]))


# 05 · DiffusionAD training
def focal_loss(p, y, alpha, gamma):
    """Focal loss: −α_t (1 − p_t)^γ log p_t, p_t = p on defect pixels and 1 − p elsewhere."""
    p_t = torch.where(y > 0.5, p, 1 - p)
    alpha_t = torch.where(y > 0.5, alpha, 1 - alpha)
    return (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t)).mean()


def mask_loss(pred, mask):
    """DiffusionAD Eq. 7: L_mask = SmoothL1(M̂, M) + γ · Focal(M̂, M), γ = 5 (α = 0.5, γ_f = 4)."""
    return F.smooth_l1_loss(pred, mask) + 5 * focal_loss(pred, mask, 0.5, 4.0)


# 06 · DiffusionAD inference
def top_k_score(maps, k):
    """Alg. 2's image score: the mean of each map's k largest pixels."""
    flat = maps.reshape(maps.shape[0], -1)
    return flat.sort(dim=1, descending=True).values[:, :k].mean(1)


def alg2_score(maps_per_lambda, k):
    """Alg. 2: average the segmentation maps over λ, then the top-k mean."""
    return top_k_score(sum(maps_per_lambda) / len(maps_per_lambda), k)


# 07 · deviation formulation
def masked_forward(z0, alpha_bar_t, mask, eps):
    """DeCo-Diff Eq. 7: diffuse the masked patches (M = 1), keep the others as they are."""
    noisy = math.sqrt(alpha_bar_t) * z0 + math.sqrt(1 - alpha_bar_t) * eps
    return mask * noisy + (1 - mask) * z0


def dod_target(z_t, z0, alpha_bar_t):
    """DeCo-Diff Eq. 11: z_t = z_0 + √(1 − ᾱ_t) δ, so δ = (z_t − z_0)/√(1 − ᾱ_t)."""
    return (z_t - z0) / math.sqrt(1 - alpha_bar_t)


def correction_step(z, delta, alpha_bar_t, alpha_bar_next):
    """Eq. 13: z̃0 = z − √(1 − ᾱ_t) δ; Eq. 14: the next latent z̃0 + √(1 − ᾱ_t') δ."""
    z0_tilde = z - math.sqrt(1 - alpha_bar_t) * delta
    return z0_tilde, z0_tilde + math.sqrt(1 - alpha_bar_next) * delta


# 08 · latent space
def psnr(x, y):
    """10 log10(peak² / MSE) per image, peak-to-peak 2 for images in [-1, 1]."""
    mse = ((x - y) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(4 / mse)


def unit_scale(latents):
    """The factor s with std(s · z) = 1 (what Stable Diffusion's 0.18215 is for its VAE)."""
    return 1 / float(latents.std())


# 09 · DeCo-Diff
def eq15(z0, z0_tilde, x0, x0_tilde, tau_l=0.2, tau_p=0.4):
    """Eq. 15 before blurring: √(latent term · pixel term), each clipped at τ and scaled to
    [0, 1]; latent Δ averaged over channels, pixel Δ the largest over RGB."""
    latent = (z0_tilde - z0).abs().mean(1, keepdim=True).clamp(max=tau_l) / tau_l
    pixel = (x0_tilde - x0).abs().amax(1, keepdim=True).clamp(max=tau_p) / tau_p
    return (latent * pixel).sqrt()


def z0_strategy(z, delta, alpha_bar_t):
    """Eq. 13: the normal latent the predicted deviation points back to."""
    return z - math.sqrt(1 - alpha_bar_t) * delta


# 12 · your own method
def baseline_map(mean_image, images):
    """How far each pixel is from the mean normal image, averaged over RGB: (B, 1, H, W)."""
    return (images - mean_image).abs().mean(1, keepdim=True)


def baseline_score(maps):
    """One number per image: its most anomalous pixel."""
    return maps.flatten(1).amax(1)
