"""GELU in its exact form, x Φ(x) with Φ the standard normal CDF, forward and backward.

    GELU(x) = x Φ(x),   Φ(x) = (1 + erf(x / √2)) / 2,   GELU'(x) = Φ(x) + x φ(x),   φ(x) = e^(-x²/2) / √(2π)

Not the tanh approximation (x (1 + tanh(√(2/π) (x + 0.044715 x³))) / 2), which some frameworks
default to: the spec fixes the exact one. NumPy has no erf; SciPy's (and CuPy's copy of SciPy's) is used.
"""

from __future__ import annotations

import math

import numpy as np

SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x, xp):
    """The error function, elementwise, on the CPU (SciPy) or the GPU (cupyx.scipy)."""
    if xp is np:
        from scipy.special import erf as function
    else:
        from cupyx.scipy.special import erf as function
    return function(x)


def gelu_forward(x, xp):
    """x Φ(x), and (x, Φ(x)) for the backward pass."""
    cdf = 0.5 * (1.0 + erf(x * SQRT_HALF, xp))
    return x * cdf, (x, cdf)


def gelu_backward(dy, saved, xp):
    """dx = dy (Φ(x) + x φ(x))."""
    x, cdf = saved
    return dy * (cdf + x * xp.exp(-0.5 * x * x) * INV_SQRT_2PI)
