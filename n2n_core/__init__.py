"""n2n ("noise-to-norm"): diffusion-based visual anomaly detection (DiffusionAD,
arXiv 2303.08730; DeCo-Diff, arXiv 2503.19357) as a course and a reproduction kit."""

__version__ = "0.1.0"
