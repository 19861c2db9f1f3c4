"""The LSTM layer: forward over the steps, and backpropagation through time, vectorised over the batch.

One step (harness/models/recurrent.py), the four gates in the canonical order i, f, g, o, each a
block of H columns of the (N, 4H) pre-activations z:

    z_t = x_t W + h_{t-1} U + b
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c_t = f c_{t-1} + i g        h_t = o tanh(c_t)          h_0 = c_0 = 0

Backward, from the last hidden state's gradient, step T down to 1, carrying dh = ∂L/∂h_t and
dc = ∂L/∂c_t (the part that flows along the cell):

    dz_o = dh tanh(c_t) o (1 - o)                 through h_t = o tanh(c_t)
    dc  += dh o (1 - tanh²(c_t))                  ... and into c_t
    dz_i = dc g i (1 - i)     dz_g = dc i (1 - g²)     dz_f = dc c_{t-1} f (1 - f)
    dc  <- dc f                                   into c_{t-1}
    dh  <- dz_t U^T                               into h_{t-1}

The weights are shared by every step, so their gradients are sums over the steps, each ONE product
once every dz_t is known: dW = Σ_t x_t^T dz_t, dU = Σ_t h_{t-1}^T dz_t, db = Σ_t Σ_n dz_t.
"""

from __future__ import annotations


def sigmoid(x, xp):
    """σ(x) = (1 + tanh(x / 2)) / 2: the same function as 1 / (1 + e^-x), without its overflow for large -x."""
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def gate_blocks(z):
    """The four gates' column blocks (views) of an (..., 4H) array, in the order i, f, g, o."""
    h = z.shape[-1] // 4
    return z[..., :h], z[..., h : 2 * h], z[..., 2 * h : 3 * h], z[..., 3 * h :]


def lstm_forward(x, kernel, recurrent_kernel, bias, xp):
    """x (T, N, F), time first -> the last hidden state h_T (N, H), and what the backward pass needs.

    The input projection of every step is one product (every x_t is known at once); the recurrent one
    waits, step by step, for the previous h.
    """
    steps, n, _ = x.shape
    hidden = recurrent_kernel.shape[0]
    projected = (x.reshape(steps * n, -1) @ kernel).reshape(steps, n, 4 * hidden)
    projected += bias
    gates = xp.empty_like(projected)  # i, f, g, o of every step, after their nonlinearities
    h_before = xp.empty((steps, n, hidden), x.dtype)  # h_{t-1}, the recurrent product's input at step t
    cells = xp.zeros((steps + 1, n, hidden), x.dtype)  # c_0 = 0, c_1, ..., c_T
    tanh_cells = xp.empty((steps, n, hidden), x.dtype)
    h = xp.zeros((n, hidden), x.dtype)
    for t in range(steps):
        h_before[t] = h
        z = projected[t] + h @ recurrent_kernel
        z_i, z_f, z_g, z_o = gate_blocks(z)
        i, f, g, o = gate_blocks(gates[t])
        i[...], f[...], g[...], o[...] = sigmoid(z_i, xp), sigmoid(z_f, xp), xp.tanh(z_g), sigmoid(z_o, xp)
        cells[t + 1] = f * cells[t] + i * g
        tanh_cells[t] = xp.tanh(cells[t + 1])
        h = o * tanh_cells[t]
    return h, (x, gates, h_before, cells, tanh_cells)


def lstm_backward(dh, saved, recurrent_kernel, dkernel, drecurrent, dbias, xp) -> None:
    """Backpropagation through time from dh = ∂L/∂h_T (N, H): the gradients of the kernel, the recurrent kernel
    and the bias, into dkernel, drecurrent and dbias. No gradient for x: the layer reads the images."""
    x, gates, h_before, cells, tanh_cells = saved
    steps, n, hidden = h_before.shape
    dz = xp.empty_like(gates)  # ∂L/∂z_t of every step
    dc = xp.zeros((n, hidden), dh.dtype)
    for t in reversed(range(steps)):
        i, f, g, o = gate_blocks(gates[t])
        dz_i, dz_f, dz_g, dz_o = gate_blocks(dz[t])
        tanh_c = tanh_cells[t]
        dz_o[...] = dh * tanh_c * o * (1 - o)
        dc += dh * o * (1 - tanh_c * tanh_c)
        dz_i[...] = dc * g * i * (1 - i)
        dz_g[...] = dc * i * (1 - g * g)
        dz_f[...] = dc * cells[t] * f * (1 - f)
        dc *= f
        if t > 0:  # h_0 is a constant: nobody needs its gradient
            dh = dz[t] @ recurrent_kernel.T
    rows = steps * n
    dz_rows = dz.reshape(rows, 4 * hidden)
    xp.matmul(h_before.reshape(rows, hidden).T, dz_rows, out=drecurrent)
    xp.matmul(x.reshape(rows, -1).T, dz_rows, out=dkernel)
    dz_rows.sum(axis=0, out=dbias)
