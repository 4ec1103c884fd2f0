"""Run profiles as data: ``smoke`` (CPU, minutes, CI), ``laptop`` (CPU, about a quarter of an
hour per category: a student's own photographs), ``paper`` (the papers' text, GPU) and
``official`` (the official code's regime, GPU; for the methods that have an official code).

Notebooks and the CLI take a profile *name* and look it up here, so the smoke and the paper
run execute the same cells with different numbers. Each method keeps its own tables under the
same names (``Method.profiles``, ``Method.train_profiles``; ``Method.check`` requires every name
in ``REQUIRED``; ``laptop`` and ``official`` where the method has them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["PROFILES", "REQUIRED", "Profile", "get_profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    image_size: int  # pixels per side fed to the models (DiffusionAD and DeCo-Diff: 256)
    mc_draws: int  # Monte Carlo draws for the numerical checks in the notebooks
    timesteps: int  # T of the pixel-space DDPM (DiffusionAD §4.1: 1000)
    latent_timesteps: int  # T of the latent DDPM (DeCo-Diff §5: 10)


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", image_size=64, mc_draws=4000,
                     timesteps=1000, latent_timesteps=10),
    "laptop": Profile("laptop", image_size=96, mc_draws=4000,
                      timesteps=1000, latent_timesteps=10),
    "paper": Profile("paper", image_size=256, mc_draws=20000,
                     timesteps=1000, latent_timesteps=10),
    "official": Profile("official", image_size=256, mc_draws=20000,
                        timesteps=1000, latent_timesteps=10),
}  # fmt: skip
REQUIRED = ("smoke", "paper")  # every method has these; "laptop", "official" where defined


def get_profile(name: str, **overrides: object) -> Profile:
    """The named profile, with any field replaced by ``overrides`` (e.g. ``image_size=128``)."""
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {name!r}")
    known = {f.name for f in fields(Profile)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown profile field(s) {unknown}; known: {sorted(known)}")
    return replace(PROFILES[name], **overrides)
