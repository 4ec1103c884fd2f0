"""Anomaly detection methods: training step and inference, nothing else."""
