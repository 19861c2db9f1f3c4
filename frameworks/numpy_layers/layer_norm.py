"""Layer normalisation over the features of each token, forward and backward.

    x_hat = (x - mean) / sqrt(var + ε),   y = x_hat scale + bias      (mean, var over the last axis; var biased)

Backward, with d = ∂L/∂x_hat = dy scale and D features: every x_hat depends on the whole row through
its mean and variance, which takes two row means out of d:

    dx = (d - mean(d) - x_hat mean(d x_hat)) / sqrt(var + ε)
"""

from __future__ import annotations


def layer_norm_forward(x, scale, bias, epsilon: float, xp):
    """y over the last axis of x, and (x_hat, 1 / sqrt(var + ε)) for the backward pass."""
    centred = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / xp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + epsilon)
    x_hat = centred * inv_std
    return x_hat * scale + bias, (x_hat, inv_std)


def layer_norm_backward(dy, saved, scale, dscale, dbias):
    """dscale = Σ dy x_hat and dbias = Σ dy over every row, into dscale and dbias; returns dx."""
    x_hat, inv_std = saved
    rows = tuple(range(dy.ndim - 1))
    (dy * x_hat).sum(axis=rows, out=dscale)
    dy.sum(axis=rows, out=dbias)
    d = dy * scale
    return inv_std * (d - d.mean(axis=-1, keepdims=True) - x_hat * (d * x_hat).mean(axis=-1, keepdims=True))
