"""Synthetic probabilities and labels with a known calibration, shared by the calibration
metric tests."""

import numpy as np


def _sample(n, k, scale, seed, temperature=1.0):
    """Probabilities softmax(z / T) with labels drawn from softmax(z): calibrated at T = 1."""
    rng = np.random.default_rng(seed)
    z = scale * rng.normal(size=(n, k))
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    q = np.exp(z / temperature - (z / temperature).max(1, keepdims=True))
    return q / q.sum(1, keepdims=True), y
