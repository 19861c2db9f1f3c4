"""A dense layer applied to every token: x (..., in) @ kernel (in, out) + bias, as ONE product.

The leading axes (batch, tokens) are folded into the rows of a single matrix, so a (N, T, D) input
is one (N*T, D) @ (D, out) product rather than N small ones.
"""


def dense_forward(x, kernel, bias=None):
    """y = x @ W + b over the last axis of x (no b for attention's projections)."""
    y = x.reshape(-1, x.shape[-1]) @ kernel
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], kernel.shape[1])


def dense_backward(dy, x, kernel, dkernel, dbias, xp, need_dx: bool = True):
    """dW = x^T dy and db = the sum of dy over every row (sample and token), into dkernel and dbias (None: no
    bias); dx = dy W^T, unless the layer reads the images (need_dx False)."""
    rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    xp.matmul(rows_x.T, rows_dy, out=dkernel)
    if dbias is not None:
        rows_dy.sum(axis=0, out=dbias)
    return (rows_dy @ kernel.T).reshape(x.shape) if need_dx else None
