"""Multi-head self-attention, forward and backward, over a batch of token sequences x (N, T, D).

    q, k, v = x W_q, x W_k, x W_v                 each (N, T, D), split into H heads of d = D / H
    s = q k^T / √d                                (N, H, T, T): how well each token's query fits each key
    a = softmax(s) over the keys                  each row sums to 1
    m = a v, the heads side by side (N, T, D);  y = m W_out          (no biases: harness/models/transformer.py)

Backward, from dy: dm = dy W_out^T; da = dm v^T, dv = a^T dm; through the softmax of each row,
ds = a (da - Σ_j da_j a_j); dq = ds k / √d, dk = ds^T q / √d; and dx collects the three projections'
input gradients, as x feeds all three.
"""

from __future__ import annotations

import math

from frameworks.numpy_layers.dense import dense_backward, dense_forward

PROJECTIONS = ("query", "key", "value")


def split_heads(x, heads: int):
    """(N, T, D) -> (N, H, T, D / H): head h is the columns [h d, (h + 1) d), the canonical layout."""
    n, tokens, width = x.shape
    return x.reshape(n, tokens, heads, width // heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """The inverse of split_heads: (N, H, T, d) -> (N, T, H d), the heads side by side in order."""
    n, heads, tokens, width = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, tokens, heads * width)


def softmax(s, xp):
    """Over the last axis, shifted by each row's maximum so that exp cannot overflow."""
    e = xp.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward(x, p, heads: int, xp):
    """y = attention(x) with the block's kernels p ("query.kernel", ..., "out.kernel"), and what backward needs."""
    q, k, v = (split_heads(dense_forward(x, p[f"{name}.kernel"]), heads) for name in PROJECTIONS)
    scale = 1.0 / math.sqrt(q.shape[-1])
    a = softmax((q @ k.swapaxes(-1, -2)) * scale, xp)
    m = merge_heads(a @ v)
    return dense_forward(m, p["out.kernel"]), (x, q, k, v, a, m)


def attention_backward(dy, saved, p, g, heads: int, xp):
    """The gradients of the four kernels into g (same names as p); returns dx."""
    x, q, k, v, a, m = saved
    scale = 1.0 / math.sqrt(q.shape[-1])
    dm = split_heads(dense_backward(dy, m, p["out.kernel"], g["out.kernel"], None, xp), heads)
    da, dv = dm @ v.swapaxes(-1, -2), a.swapaxes(-1, -2) @ dm
    ds = a * (da - (da * a).sum(axis=-1, keepdims=True))
    ds *= scale
    dq, dk = ds @ k, ds.swapaxes(-1, -2) @ q
    return sum(dense_backward(merge_heads(d), x, p[f"{name}.kernel"], g[f"{name}.kernel"], None, xp)
               for name, d in zip(PROJECTIONS, (dq, dk, dv)))  # x feeds all three projections
