"""n2n ("noise-to-norm"): diffusion-based visual anomaly detection, explained and reproduced."""

__version__ = "0.1.0"
