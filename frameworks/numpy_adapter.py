"""The NumPy adapter: every model written out by hand, forward and backward, as the teaching reference.

Every layer is a pair of short functions (forward, backward) over an array module `xp`:
numpy on the CPU, or cupy on a GPU (the "cupy" variant), with the same code for both.
Images are NHWC, conv kernels HWIO and dense kernels (in, out): the canonical layout of
harness.models, so parameters go in and out without any transposition.

A convolution is im2col (a strided view of every 3x3 patch, copied once into a matrix)
followed by ONE matrix product per batch; its input gradient is col2im, the transpose.
All parameters live in one flat vector (and so do their gradients), each layer's kernel
and bias being views into it, so the optimizer updates the whole model in a handful of
vectorised in-place operations.

The MLP's and the CNN's layers are below; the LSTM's and the Vision Transformer's, in the same
style, are in frameworks/numpy_layers/ (its __init__ says in which order to read them).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from frameworks.numpy_layers import NETWORKS
from harness.adapter import ADAM_EPSILON_FORMS, SGD_MOMENTUM_FORMS, Adapter, DeviceUnavailable, Unsupported
from harness.models import OptimizerSpec
from harness.models.operations import FIRST_TRANSPOSED, SECOND_TRANSPOSED

# ---------------------------------------------------------------------------------------------
# Layers: forward returns what backward needs; backward writes parameter gradients in place
# (into views of the flat gradient vector) and returns the gradient of the layer's input.
# ---------------------------------------------------------------------------------------------


def dense_forward(x, kernel, bias):
    """y = x @ W + b, for x of shape (N, in)."""
    y = x @ kernel
    y += bias
    return y


def dense_backward(dy, x, kernel, dkernel, dbias, xp, need_dx: bool = True):
    """dW = x^T dy, db = sum_n dy, dx = dy W^T (skipped for the first layer: no one needs it)."""
    xp.matmul(x.T, dy, out=dkernel)
    dy.sum(axis=0, out=dbias)
    return dy @ kernel.T if need_dx else None


def relu_(x, xp):
    """ReLU in place: the activation overwrites its input, which backward never needs."""
    return xp.maximum(x, 0, out=x)


def relu_backward_(dy, y):
    """dx = dy where the ReLU output y is positive, else 0; in place on dy."""
    dy *= y > 0
    return dy


def im2col(x, k: int, xp):
    """(N, H, W, C) -> (N*H'*W', k*k*C): one row per output pixel, holding its k x k x C patch.

    The patch is ordered (kh, kw, c), like a HWIO kernel reshaped to (k*k*C, O), so that a
    'valid' convolution is a single matrix product. The strided view costs nothing; the reshape
    makes the one copy that the GEMM needs contiguous. (sliding_window_view builds the same view,
    but CuPy's checks each window size with a read back from the GPU: four blocking syncs a step.)
    """
    n, h, w, c = x.shape
    ho, wo = h - k + 1, w - k + 1
    sn, sh, sw, sc = x.strides
    patches = xp.lib.stride_tricks.as_strided(x, (n, ho, wo, k, k, c), (sn, sh, sw, sh, sw, sc))
    return patches.reshape(n * ho * wo, k * k * c)


def col2im(dcols, x_shape: tuple[int, ...], k: int, xp):
    """The transpose of im2col: each patch gradient is added back at the pixels it was copied from.

    dcols is (k*k, N*H'*W', C), one contiguous block per kernel offset (i, j): block i*k + j is
    the gradient of the input window shifted by (i, j), added as one slice over the whole batch.
    """
    n, h, w, c = x_shape
    ho, wo = h - k + 1, w - k + 1
    dx = xp.zeros(x_shape, dcols.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, i : i + ho, j : j + wo] += dcols[i * k + j].reshape(n, ho, wo, c)
    return dx


def conv_forward(x, kernel, xp):
    """'valid' stride-1 convolution without bias: (N, H, W, C) * (k, k, C, O) -> (N, H', W', O)."""
    n, h, w, _ = x.shape
    k, out_channels = kernel.shape[0], kernel.shape[3]
    cols = im2col(x, k, xp)
    y = cols @ kernel.reshape(-1, out_channels)
    return y.reshape(n, h - k + 1, w - k + 1, out_channels), cols


def conv_weight_gradient(dy, cols, dkernel, xp) -> None:
    """dW = cols^T dy as one GEMM, into dkernel (k, k, C, O), from the patches conv_forward made."""
    out_channels = dkernel.shape[3]
    xp.matmul(cols.T, dy.reshape(-1, out_channels), out=dkernel.reshape(-1, out_channels))


def conv_input_gradient(dy, kernel, x_shape: tuple[int, ...], xp):
    """dx = col2im(dy W^T), with dy W^T computed per kernel offset, as (k*k, N*H'*W', C) in one batched
    product, so that col2im adds contiguous blocks instead of gathering C-wide strips from a (.., k*k*C) matrix."""
    k, in_channels, out_channels = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    kernel_per_offset_t = kernel.reshape(k * k, in_channels, out_channels).transpose(0, 2, 1)
    return col2im(dy.reshape(-1, out_channels) @ kernel_per_offset_t, x_shape, k, xp)


def _pool_window(x, i: int, j: int, h2: int, w2: int):
    """Element (i, j) of every 2x2 window: x cropped to even sizes, viewed as (N, H//2, 2, W//2, 2, C),
    at [:, :, i, :, j]; written as a strided slice, which is always a view (also for writing into)."""
    return x[:, i : 2 * h2 : 2, j : 2 * w2 : 2]


POOL_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # row-major: the order in which PyTorch/XLA find the first max


def maxpool_forward(x, xp):
    """2x2 max pool, stride 2, floor: (N, H, W, C) -> (N, H//2, W//2, C), as the max of the 4 window corners.

    Three elementwise maxima over strided views are cheaper than .max(axis=(2, 4)) on the 6-D view.
    """
    h2, w2 = x.shape[1] // 2, x.shape[2] // 2
    corners = [_pool_window(x, i, j, h2, w2) for i, j in POOL_OFFSETS]
    y = xp.maximum(corners[0], corners[1])
    xp.maximum(y, corners[2], out=y)
    return xp.maximum(y, corners[3], out=y)


def maxpool_backward(dy, x, y, xp):
    """Route each window's gradient to its maximum; on ties only the first one (row-major) gets it."""
    h2, w2 = y.shape[1], y.shape[2]
    dx = xp.empty_like(x)
    dx[:, 2 * h2 :] = 0  # the row and column an odd size crops off get no gradient
    dx[:, :, 2 * w2 :] = 0
    unrouted = xp.ones(y.shape, bool)  # windows whose maximum has not been met yet
    is_max = xp.empty(y.shape, bool)
    for i, j in POOL_OFFSETS:
        xp.equal(_pool_window(x, i, j, h2, w2), y, out=is_max)
        is_max &= unrouted
        unrouted ^= is_max
        xp.multiply(dy, is_max, out=_pool_window(dx, i, j, h2, w2))
    return dx


def dropout_mask(rng, shape: tuple[int, ...], rate: float, dtype):
    """Inverted dropout: keep with probability 1 - rate and scale by 1 / (1 - rate), so evaluation needs nothing."""
    keep = rng.random(shape, dtype=dtype) >= rate
    return keep * dtype.type(1.0 / (1.0 - rate))


def log_softmax(logits, xp):
    """Numerically stable: subtract each row's max before exponentiating."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits, labels, xp):
    """Mean cross-entropy over the batch, and its gradient (softmax - one_hot) / N."""
    n = len(labels)
    rows = xp.arange(n)
    log_probs = log_softmax(logits, xp)
    loss = -log_probs[rows, labels].mean()
    dlogits = xp.exp(log_probs)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits


# ---------------------------------------------------------------------------------------------
# Optimizers: update the flat parameter vector in place, exactly as OptimizerSpec defines them.
# ---------------------------------------------------------------------------------------------


class SGD:
    """SGD with momentum, in either published form of its buffer (they agree while the rate is constant).

    gradient (PyTorch, Optax):  v <- momentum v + g;      p <- p - lr v     (nesterov: p <- p - lr (g + momentum v))
    step (Keras, Sutskever):    v <- momentum v - lr g;   p <- p + v        (nesterov: p <- p + momentum v - lr g)
    """

    def __init__(self, spec: OptimizerSpec, params, xp, momentum_form: str = "gradient") -> None:
        if momentum_form not in SGD_MOMENTUM_FORMS:
            raise ValueError(f"unknown SGD momentum form {momentum_form!r}: use one of {', '.join(SGD_MOMENTUM_FORMS)}")
        self.spec, self.momentum, self.nesterov = spec, spec.momentum, spec.nesterov
        self.holds_steps = momentum_form == "step"
        self.velocity = xp.zeros_like(params) if spec.momentum else None
        self.scratch = xp.empty_like(params)
        self.xp, self.t = xp, 0

    def step(self, params, grads) -> None:
        xp, mu, v, step = self.xp, self.momentum, self.velocity, self.scratch
        lr = self.spec.lr_at(self.t)  # this step's rate, as the schedule sets it
        self.t += 1
        if v is None:  # plain SGD
            xp.multiply(grads, lr, out=step)
            params -= step
        elif self.holds_steps:
            v *= mu
            xp.multiply(grads, lr, out=step)
            v -= step  # v <- momentum v - lr g
            if self.nesterov:
                xp.multiply(v, mu, out=step)
                params += step
                xp.multiply(grads, lr, out=step)
                params -= step
            else:
                params += v
        else:
            v *= mu
            v += grads  # v <- momentum v + g
            if self.nesterov:
                xp.multiply(v, mu, out=step)
                step += grads
                step *= lr
            else:
                xp.multiply(v, lr, out=step)
            params -= step


class Adam:
    """Adam, and AdamW (which first shrinks p by 1 - lr * weight_decay), in either published epsilon form.

    sqrt_v_hat (PyTorch, Optax):  p <- p - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t),
                                  v_hat = v / (1 - b2^t)
    sqrt_v (Keras; Kingma & Ba's "efficient" form), the corrections folded into the rate:
                                  p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
    The two differ only through eps, which the second form in effect divides by sqrt(1 - b2^t): at t = 1
    and beta2 = 0.999 it acts 32x larger, which matters wherever |g| is within a few hundred eps.
    """

    def __init__(self, spec: OptimizerSpec, params, xp, epsilon_form: str = "sqrt_v_hat") -> None:
        if epsilon_form not in ADAM_EPSILON_FORMS:
            raise ValueError(f"unknown Adam epsilon form {epsilon_form!r}: use one of {', '.join(ADAM_EPSILON_FORMS)}")
        self.spec, (self.beta1, self.beta2), self.eps = spec, spec.betas, spec.eps
        self.epsilon_form = epsilon_form
        self.weight_decay = spec.weight_decay if spec.name == "adamw" else 0.0
        self.m, self.v = xp.zeros_like(params), xp.zeros_like(params)
        self.scratch = xp.empty_like(params)
        self.xp, self.t = xp, 0
        # On the CPU, a dozen passes over blocks that stay in L2 cache beat a dozen passes over RAM;
        # on a GPU each pass is one kernel over everything.
        self.block = 1 << 15 if xp is np else max(len(params), 1)

    def step(self, params, grads) -> None:
        self.lr = self.spec.lr_at(self.t)  # this step's rate, as the schedule sets it
        self.t += 1
        for start in range(0, len(params), self.block):
            part = slice(start, start + self.block)
            self._update(params[part], grads[part], self.m[part], self.v[part], self.scratch[part])

    def _update(self, p, g, m, v, tmp) -> None:
        xp, b1, b2, t = self.xp, self.beta1, self.beta2, self.t
        if self.weight_decay:
            p *= 1 - self.lr * self.weight_decay  # decoupled: not part of the gradient moments
        xp.multiply(g, 1 - b1, out=tmp)
        m *= b1
        m += tmp  # m <- b1 m + (1 - b1) g
        xp.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        v *= b2
        v += tmp  # v <- b2 v + (1 - b2) g^2
        xp.sqrt(v, out=tmp)
        if self.epsilon_form == "sqrt_v_hat":
            tmp /= (1 - b2**t) ** 0.5  # sqrt(v_hat)
            tmp += self.eps
            xp.divide(m, tmp, out=tmp)
            tmp *= self.lr / (1 - b1**t)  # m_hat / (sqrt(v_hat) + eps), times lr
        else:
            tmp += self.eps  # sqrt(v) + eps
            xp.divide(m, tmp, out=tmp)
            tmp *= self.lr * (1 - b2**t) ** 0.5 / (1 - b1**t)
        p -= tmp


def make_optimizer(spec: OptimizerSpec, params, xp, adam_epsilon: str = "sqrt_v_hat", sgd_momentum: str = "gradient"):
    """The optimizer the spec names (OptimizerSpec has checked its settings), over the flat parameter vector."""
    return SGD(spec, params, xp, sgd_momentum) if spec.name == "sgd" else Adam(spec, params, xp, adam_epsilon)


# ---------------------------------------------------------------------------------------------
# Plumbing: array module, BLAS threads, flat parameter vector.
# ---------------------------------------------------------------------------------------------


def array_module(device: str):
    """numpy on the CPU; cupy (imported only here) on a GPU."""
    if device == "cpu":
        return np
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # not installed, no driver, no device
        raise DeviceUnavailable(f"cupy cannot use a CUDA device here: {error}") from None
    return cupy


def peak_in_use_hook(cupy):
    """A CuPy memory hook (a context manager) keeping the peak of the pool's bytes in use: the measure
    PyTorch, JAX and TensorFlow report, where CuPy reports only the current figure. Each hook is named
    for itself, since CuPy refuses two hooks of one name in a thread."""

    class PeakInUse(cupy.cuda.MemoryHook):
        def __init__(self) -> None:
            self.name = f"peak-in-use-{id(self)}"
            self.in_use = self.peak = cupy.get_default_memory_pool().used_bytes()

        def malloc_postprocess(self, **allocation) -> None:
            self.in_use += allocation["mem_size"]
            self.peak = max(self.peak, self.in_use)

        def free_postprocess(self, **allocation) -> None:
            self.in_use -= allocation["mem_size"]

    return PeakInUse()


def limit_blas_threads(threads: int):
    """Hold the BLAS pool to `threads` (the worker also pins the CPU affinity, which covers a missing threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def keep_freed_memory_for_reuse() -> None:
    """Let glibc keep large freed arrays in the heap instead of unmapping them.

    By default every array over a few MB is mmap'd on allocation and unmapped on release, so each
    batch page-faults its im2col matrices and activations (tens of MB) in again: about a third of
    the CNN's step time here. Raising the mmap threshold (to glibc's maximum, 32 MiB) and the trim
    threshold lets the next batch reuse the same memory. A no-op where the C library has no mallopt.
    """
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def split_flat(flat, shapes: dict[str, tuple[int, ...]]) -> dict[str, object]:
    """Views of consecutive slices of `flat`, one per name, in the given shapes."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        views[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return views


def blas_name() -> str:
    """The BLAS numpy was built against: openblas, mkl, accelerate..."""
    try:
        name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"].lower()
    except (TypeError, KeyError):
        return "unknown blas"
    return next((known for known in ("openblas", "mkl", "accelerate", "blis") if known in name), name)


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


class NumpyAdapter(Adapter):
    """Every model in plain NumPy (or CuPy), forward and backward by hand.

    MLP: dense + ReLU per hidden layer -> dropout -> dense 10.
    CNN: [conv kxk -> ReLU -> maxpool 2x2] per channel count -> flatten (NHWC) -> dense + ReLU
    -> dropout -> dense 10.
    RNN: the 28 rows through an LSTM -> the last hidden state -> dropout -> dense 10.
    ViT: 7x7 patches -> class token and positions -> pre-norm encoder blocks -> layer norm of the class
    token -> dropout -> dense 10.
    (The RNN and the ViT are frameworks/numpy_layers/'s networks, run as self.network.)
    Dropout sits at one position in every model: right before the final dense layer (after the
    last hidden ReLU, the LSTM's last state, the ViT's normed class token). It is inverted dropout
    at ModelSpec.dropout, off in evaluate, and skipped entirely at rate 0; its masks come from
    default_rng(seed).

    Each conv block is computed as conv -> maxpool -> + bias -> ReLU: max commutes with adding a
    per-channel constant and with ReLU (both monotonic), so values and gradients are those of
    conv + bias -> ReLU -> maxpool (up to the rounding of z + b), with the elementwise work done
    on a quarter of the pixels.
    """

    name = "numpy"
    extra = "numpy"
    modules = ("numpy",)
    variants = ("numpy", "cupy")
    devices = ("cpu", "gpu")
    variant_devices = {"numpy": ("cpu",), "cupy": ("gpu",)}
    variant_modules = {"cupy": ("cupy",)}
    models = ("mlp", "cnn", "rnn", "vit")

    def build(self) -> None:
        if (self.variant == "cupy") != (self.device == "gpu"):
            raise Unsupported(f"numpy variant {self.variant!r} does not run on {self.device}")
        self.xp = array_module(self.device)
        self.dtype = np.dtype(self.options.get("dtype", "float32"))
        self.peak_in_use = None  # bytes, measured once after training (peak_device_memory_mb)
        if self.xp is np:
            self._blas_limits = limit_blas_threads(self.threads)  # kept: it holds the limit
            keep_freed_memory_for_reuse()
        self.rng = self.xp.random.default_rng(self.seed)
        self.network = NETWORKS[self.model.name](self.model, self.xp) if self.model.name in NETWORKS else None
        layers = [] if self.network else self.model.layers  # the MLP's and CNN's, run by forward below
        self.conv_layers = [prefix for prefix, _ in layers if prefix.startswith("conv")]
        self.dense_layers = [prefix for prefix, _ in layers if prefix.startswith("dense")]
        shapes = self.model.param_shapes
        self.flat_params = self.xp.zeros(self.model.param_count, self.dtype)
        self.flat_grads = self.xp.zeros(self.model.param_count, self.dtype)
        self.params = split_flat(self.flat_params, shapes)
        self.grads = split_flat(self.flat_grads, shapes)
        # The parity reference computes every published form; the benchmark row, the declared ones.
        forms = [self.options.get(form, getattr(self, form)) for form in ("adam_epsilon", "sgd_momentum")]
        self.optimizer_state = make_optimizer(self.optimizer, self.flat_params, self.xp, *forms)

    # -- parameters and data -------------------------------------------------------------------

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        for name, view in self.params.items():
            value = np.asarray(params[name])
            if value.shape != view.shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {view.shape}")
            view[...] = self.xp.asarray(value, self.dtype)

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: self._to_host(view).astype(np.float32) for name, view in self.params.items()}

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        self.x_train, self.y_train = self._model_input(x_train), self.xp.asarray(y_train)
        self.x_eval, self.y_eval = self._model_input(x_eval), self.xp.asarray(y_eval)

    def _model_input(self, images):
        """Images on the device in the working dtype: NHWC for the CNN, a flat (N, 784) view for the MLP."""
        x = self.xp.asarray(images, self.dtype)
        return x.reshape(len(x), -1) if self.model.name == "mlp" else x.reshape(len(x), 28, 28, 1)

    def _to_host(self, array) -> np.ndarray:
        return array if self.xp is np else self.xp.asnumpy(array)

    # -- forward and backward ------------------------------------------------------------------

    def forward(self, x, train: bool):
        """Logits, and per layer what its backward needs (`saved`)."""
        if self.network:
            return self.network.forward(x, self.params, self._dropout_mask if train else None)
        xp, p, saved = self.xp, self.params, {}
        h = x
        for name in self.conv_layers:
            z, cols = conv_forward(h, p[f"{name}.kernel"], xp)
            pooled = maxpool_forward(z, xp)
            saved[name] = (h, cols, z, pooled)  # h: this block's input
            h = relu_(pooled + p[f"{name}.bias"], xp)  # see the class docstring: pool before bias + ReLU
        h = h.reshape(len(h), -1)  # NHWC flatten: a view, no copy
        *hidden, last = self.dense_layers
        for name in hidden:
            saved[name] = h  # this layer's input
            h = relu_(dense_forward(h, p[f"{name}.kernel"], p[f"{name}.bias"]), xp)
        saved["dropout"] = None
        if train and self.model.dropout > 0:
            saved["dropout"] = mask = dropout_mask(self.rng, h.shape, self.model.dropout, self.dtype)
            h *= mask  # in place: (h > 0) stays a valid ReLU mask wherever the gradient is non-zero
        saved[last] = h
        return dense_forward(h, p[f"{last}.kernel"], p[f"{last}.bias"]), saved

    def backward(self, dlogits, saved) -> None:
        """Fill self.grads (views into self.flat_grads) from the loss gradient and the saved values."""
        if self.network:
            return self.network.backward(dlogits, saved, self.params, self.grads)
        xp, p, g = self.xp, self.params, self.grads
        dh = dlogits
        for index in reversed(range(len(self.dense_layers))):
            name = self.dense_layers[index]
            x_in = saved[name]
            need_dx = index > 0 or bool(self.conv_layers)
            dh = dense_backward(dh, x_in, p[f"{name}.kernel"], g[f"{name}.kernel"], g[f"{name}.bias"], xp, need_dx)
            if not need_dx:
                return
            if index == len(self.dense_layers) - 1 and saved["dropout"] is not None:
                dh *= saved["dropout"]
            relu_backward_(dh, x_in)  # every dense input but the image is a ReLU output
        for index in reversed(range(len(self.conv_layers))):
            name = self.conv_layers[index]
            x_in, cols, z, pooled = saved[name]
            dh = dh.reshape(pooled.shape)  # gradient after the ReLU mask, i.e. w.r.t. pooled + bias
            dh.sum(axis=(0, 1, 2), out=g[f"{name}.bias"])
            dz = maxpool_backward(dh, z, pooled, xp)
            conv_weight_gradient(dz, cols, g[f"{name}.kernel"], xp)
            if index == 0:  # no one needs the gradient of the images
                return
            dh = conv_input_gradient(dz, p[f"{name}.kernel"], x_in.shape, xp)
            relu_backward_(dh, x_in)  # the input of every block but the first is a ReLU output

    def _dropout_mask(self, shape: tuple[int, ...]):
        """A fresh dropout mask for the networks of frameworks/numpy_layers, or None at rate 0 (nothing drawn)."""
        return dropout_mask(self.rng, shape, self.model.dropout, self.dtype) if self.model.dropout > 0 else None

    def _loss_and_backward(self, x, y, train: bool):
        logits, saved = self.forward(x, train)
        loss, dlogits = softmax_cross_entropy(logits, y, self.xp)
        self.backward(dlogits, saved)
        return loss

    def loss_and_grads(self, x, y, train: bool = False) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss on one batch and the gradient of every parameter (canonical names, host copies)."""
        loss = self._loss_and_backward(self._model_input(x), self.xp.asarray(y), train)
        return float(loss), {name: self._to_host(grad).copy() for name, grad in self.grads.items()}

    # -- training and evaluation ---------------------------------------------------------------

    def train_epoch(self, batches: np.ndarray) -> float:
        batches = self.xp.asarray(batches)
        losses = self.xp.empty(len(batches), self.dtype)
        for i, indices in enumerate(batches):
            losses[i] = self._loss_and_backward(self.x_train[indices], self.y_train[indices], train=True)
            self.optimizer_state.step(self.flat_params, self.flat_grads)
            if self.sync_each_step:  # only the GPU check's contrast run: a read-back every step
                float(losses[i])
        self._sync()
        self.last_batches = batches  # for peak_device_memory_mb
        return float(losses.mean(dtype=np.float64))

    def eval_chunk(self, rows: slice):
        x, y = self.x_eval[rows], self.y_eval[rows]
        logits, _ = self.forward(x, train=False)
        loss = -log_softmax(logits, self.xp)[self.xp.arange(len(y)), y].sum(dtype=np.float64)
        return loss, (logits.argmax(axis=1) == y).sum()

    def _sync(self) -> None:
        """Wait for queued GPU kernels, so the caller's timer measures the work (numpy is synchronous)."""
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()

    @property
    def backend(self) -> str:
        return "cupy" if self.xp is not np else blas_name()

    def peak_device_memory_mb(self) -> float | None:
        """Measured once the timed work is over: one more step and an evaluation, which allocate what every
        step and evaluation did, under a hook (its Python call per allocation would slow a timed epoch)."""
        if self.xp is np:
            return None
        if self.peak_in_use is None:
            with peak_in_use_hook(self.xp) as hook:
                if len(getattr(self, "last_batches", ())):
                    x, y = self.x_train[self.last_batches[-1]], self.y_train[self.last_batches[-1]]
                    self._loss_and_backward(x, y, train=True)
                    self.optimizer_state.step(self.flat_params, self.flat_grads)
                if hasattr(self, "x_eval"):
                    self.evaluate()
            self.peak_in_use = hook.peak
        return self.peak_in_use / 2**20

    def device_memory_in_use_mb(self) -> float | None:
        return None if self.xp is np else self.xp.get_default_memory_pool().used_bytes() / 2**20

    @staticmethod
    def matmul_probe(device: str, size: int, threads: int):
        """One float32 product in numpy's BLAS (cuBLAS through CuPy on a GPU), into a preallocated result."""
        xp = array_module(device)
        if xp is np:
            limit_blas_threads(threads)
        rng = xp.random.default_rng(0)
        a, b = (rng.random((size, size), dtype=xp.float32) for _ in range(2))
        c = xp.empty_like(a)

        def product() -> None:
            xp.matmul(a, b, out=c)
            if xp is not np:
                xp.cuda.Device().synchronize()

        return product, "cupy (cublas)" if xp is not np else blas_name()

    @staticmethod
    def op_probe(device: str, operation: dict, threads: int):
        """One step operation as train_epoch runs it: a product (or a stack of them) in numpy's BLAS; a
        convolution as im2col and one GEMM, its weight gradient as the GEMM over the patches the forward pass
        kept, its input gradient as the batched product and col2im."""
        from harness.execute.probes import operands

        xp = array_module(device)
        if xp is np:
            limit_blas_threads(threads)
        given = {name: xp.asarray(value) for name, value in operands(operation).items()}
        role = operation["role"]
        if operation["kind"] in ("matmul", "bmm"):  # bmm: a stack of products, as attention's per sample and head
            a = given["a"].swapaxes(-1, -2) if role in FIRST_TRANSPOSED else given["a"]
            b = given["b"].swapaxes(-1, -2) if role in SECOND_TRANSPOSED else given["b"]
            out = xp.empty((*a.shape[:-1], b.shape[-1]), np.float32)
            work = lambda: xp.matmul(a, b, out=out)  # noqa: E731
        elif role == "forward":
            work = lambda: conv_forward(given["x"], given["w"], xp)[0]  # noqa: E731
        elif role == "weight gradient":
            cols, dkernel = im2col(given["x"], given["w"].shape[0], xp).copy(), xp.empty_like(given["w"])
            work = lambda: conv_weight_gradient(given["dy"], cols, dkernel, xp) or dkernel  # noqa: E731
        else:
            work = lambda: conv_input_gradient(given["dy"], given["w"], given["x"].shape, xp)  # noqa: E731

        def run():
            result = work()
            if xp is not np:
                xp.cuda.Device().synchronize()
            return result

        return run

    @staticmethod
    def matmul_on_device(device: str, a: np.ndarray, b: np.ndarray):
        xp = array_module(device)
        if xp is np:
            return a @ b, {"precision_set": "float32 (sgemm)"}
        runtime = xp.cuda.runtime
        facts = {"precision_set": f"CUPY_TF32={os.environ.get('CUPY_TF32', 'unset (off)')}",
                 "cuda": str(runtime.runtimeGetVersion()), "driver": str(runtime.driverGetVersion())}
        try:  # cuDNN is an optional part of CuPy
            from cupy.cuda import cudnn

            facts["cudnn"] = str(cudnn.getVersion())
        except Exception:
            pass
        return xp.asnumpy(xp.asarray(a) @ xp.asarray(b)), facts
