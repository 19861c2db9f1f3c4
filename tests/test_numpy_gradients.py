"""The NumPy adapter's hand-written backward pass, optimizers and training loop, checked in isolation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from frameworks.numpy_adapter import SGD, Adam, NumpyAdapter, im2col, maxpool_backward, maxpool_forward
from harness.adapter import discover
from harness.models import ModelSpec, OptimizerSpec

TINY_MLP = dict(hidden=(8,), dropout=0.0)
TINY_CNN = dict(channels=(2, 3), dense=5, dropout=0.0)
TRAINABLE = {"mlp": dict(hidden=(32,), dropout=0.2), "cnn": dict(channels=(8, 16), dense=32, dropout=0.2)}


def make_adapter(model: str, optimizer: OptimizerSpec | None = None, seed: int = 0, **options) -> NumpyAdapter:
    optimizer = optimizer or OptimizerSpec()
    sizes = {"mlp": TINY_MLP, "cnn": TINY_CNN}[model]
    spec = ModelSpec(model, **{**sizes, **options.pop("sizes", {})})
    return NumpyAdapter(spec, optimizer, device="cpu", variant="numpy", seed=seed, threads=1, options=options)


def random_params(adapter: NumpyAdapter, seed: int) -> dict[str, np.ndarray]:
    """Glorot kernels plus non-zero biases, so every bias gradient path is exercised."""
    rng = np.random.default_rng(seed)
    params = adapter.model.init_params(seed)
    return {
        name: value + 0.1 * rng.standard_normal(value.shape) if name.endswith("bias") else value
        for name, value in params.items()
    }


def random_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 28, 28, 1)), rng.integers(0, 10, n)


def learnable_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each class a fixed random image plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 1, (10, 28, 28, 1))
    labels = rng.integers(0, 10, n).astype(np.int32)
    images = np.clip(prototypes[labels] + rng.normal(0, 0.25, (n, 28, 28, 1)), 0, 1).astype(np.float32)
    return images, labels


def numerical_gradient(adapter: NumpyAdapter, x, y, name: str, index: tuple, train: bool, eps: float = 1e-6) -> float:
    """Central difference of the loss in one parameter entry; the dropout rng is reset so each call draws one mask."""
    param, original, losses = adapter.params[name], adapter.params[name][index], []
    for value in (original + eps, original - eps):
        param[index] = value
        adapter.rng = np.random.default_rng(123)
        losses.append(adapter.loss_and_grads(x, y, train=train)[0])
    param[index] = original
    return (losses[0] - losses[1]) / (2 * eps)


@pytest.mark.parametrize(
    "model, sizes, train",
    [
        ("mlp", {}, False),
        ("cnn", {}, False),
        ("mlp", {"hidden": (8, 6), "dropout": 0.5}, True),
        ("cnn", {"dropout": 0.5}, True),
    ],
)
def test_gradients_match_finite_differences(model, sizes, train):
    adapter = make_adapter(model, dtype="float64", sizes=sizes)
    adapter.set_params(random_params(adapter, seed=1))
    x, y = random_batch(4, seed=2)
    adapter.rng = np.random.default_rng(123)
    _, grads = adapter.loss_and_grads(x, y, train=train)
    rng = np.random.default_rng(3)
    for name, grad in grads.items():
        assert grad.shape == adapter.model.param_shapes[name] and grad.dtype == np.float64
        flat_indices = rng.choice(grad.size, size=min(grad.size, 12), replace=False)
        indices = [np.unravel_index(i, grad.shape) for i in flat_indices]
        analytic = np.array([grad[i] for i in indices])
        numeric = np.array([numerical_gradient(adapter, x, y, name, i, train) for i in indices])
        assert np.abs(analytic).max() > 1e-6, f"{name}: gradient vanishes, the check would prove nothing"
        error = np.linalg.norm(analytic - numeric) / np.linalg.norm(analytic + numeric)
        assert error < 1e-6, f"{name}: relative error {error:.2e}\nanalytic {analytic}\nnumeric  {numeric}"


def reference_logits(spec: ModelSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The models in the spec's own order (conv + bias -> ReLU -> pool), written the slow, obvious way."""
    h = x
    for i in range(len(spec.channels) if spec.name == "cnn" else 0):
        kernel, bias = params[f"conv{i}.kernel"], params[f"conv{i}.bias"]
        k = kernel.shape[0]
        out_h, out_w = h.shape[1] - k + 1, h.shape[2] - k + 1
        z = bias + sum(
            np.einsum("nhwc,co->nhwo", h[:, a : a + out_h, b : b + out_w], kernel[a, b])
            for a in range(k)
            for b in range(k)
        )
        z = np.maximum(z, 0)
        h = z[:, : out_h // 2 * 2, : out_w // 2 * 2].reshape(len(z), out_h // 2, 2, out_w // 2, 2, -1).max(axis=(2, 4))
    h = h.reshape(len(h), -1)
    dense = [prefix for prefix, _ in spec.layers if prefix.startswith("dense")]
    for i, prefix in enumerate(dense):
        h = h @ params[f"{prefix}.kernel"] + params[f"{prefix}.bias"]
        h = np.maximum(h, 0) if i < len(dense) - 1 else h
    return h


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_forward_matches_the_spec_order_of_layers(model):
    adapter = make_adapter(model, dtype="float64")
    params = random_params(adapter, seed=5)
    adapter.set_params(params)
    x, _ = random_batch(3, seed=6)
    logits, _ = adapter.forward(adapter._model_input(x), train=False)
    np.testing.assert_allclose(logits, reference_logits(adapter.model, params, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model, width", [("mlp", "hidden"), ("cnn", "dense")])
def test_dropout_sits_before_the_last_dense_layer(model, width):
    adapter = make_adapter(model, sizes={"dropout": 0.5})
    x, _ = random_batch(64, seed=7)
    _, saved = adapter.forward(adapter._model_input(x), train=True)
    mask = saved["dropout"]
    units = getattr(adapter.model, width)
    assert mask.shape == (64, units[-1] if isinstance(units, tuple) else units)
    assert set(np.unique(mask)) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1 / (1 - 0.5)
    assert adapter.forward(adapter._model_input(x), train=False)[1]["dropout"] is None
    no_dropout = make_adapter(model, sizes={"dropout": 0.0})
    state = no_dropout.rng.bit_generator.state
    assert no_dropout.forward(no_dropout._model_input(x), train=True)[1]["dropout"] is None
    assert no_dropout.rng.bit_generator.state == state  # rate 0 draws nothing


@pytest.mark.parametrize("shape, k", [((2, 5, 6, 3), 3), ((1, 4, 4, 1), 2), ((3, 7, 5, 2), 1)])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_im2col_is_the_patch_matrix_and_needs_only_a_strided_view(shape, k, layout):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if layout == "strided":  # a view with other strides, as a transposed activation would be
        x = np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    n, h, w, c = shape
    expected = np.array([x[b, i : i + k, j : j + k, :].reshape(-1)
                         for b in range(n) for i in range(h - k + 1) for j in range(w - k + 1)])
    # only as_strided and reshape: CuPy's sliding_window_view reads the window back from the GPU every call
    only_strides = SimpleNamespace(lib=SimpleNamespace(stride_tricks=SimpleNamespace(
        as_strided=np.lib.stride_tricks.as_strided)))
    np.testing.assert_array_equal(im2col(x, k, only_strides), expected)


def test_maxpool_routes_ties_to_the_first_max_and_crops_odd_edges():
    x = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]).reshape(1, 3, 3, 1)
    y = maxpool_forward(x, np)
    assert y.shape == (1, 1, 1, 1) and y.item() == 1.0
    dx = maxpool_backward(np.full(y.shape, 2.0), x, y, np)
    assert dx.reshape(3, 3).tolist() == [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def run_optimizer(spec: OptimizerSpec, gradients: list[list[float]]) -> np.ndarray:
    params = np.array([1.0, -2.0])
    optimizer = (SGD if spec.name == "sgd" else Adam)(spec, params, np)
    for g in gradients:
        optimizer.step(params, np.array(g))
    return params


GRADIENTS = [[0.5, -1.0], [0.25, 2.0]]


def test_sgd_momentum():
    lr, mu = 0.1, 0.9
    p, v = np.array([1.0, -2.0]), np.zeros(2)
    for g in map(np.array, GRADIENTS):
        v = mu * v + g
        p = p - lr * v
    np.testing.assert_allclose(run_optimizer(OptimizerSpec("sgd", lr=lr, momentum=mu), GRADIENTS), p, rtol=1e-12)
    # by hand: v1 = g1, p1 = p0 - 0.1 g1; v2 = 0.9 g1 + g2, p2 = p1 - 0.1 v2
    assert np.allclose(p, [1.0 - 0.05 - 0.1 * (0.45 + 0.25), -2.0 + 0.1 - 0.1 * (-0.9 + 2.0)])


def test_sgd_nesterov_and_plain():
    lr, mu = 0.1, 0.9
    p, v = np.array([1.0, -2.0]), np.zeros(2)
    for g in map(np.array, GRADIENTS):
        v = mu * v + g
        p = p - lr * (g + mu * v)
    nesterov = OptimizerSpec("sgd", lr=lr, momentum=mu, nesterov=True)
    np.testing.assert_allclose(run_optimizer(nesterov, GRADIENTS), p, rtol=1e-12)
    plain = run_optimizer(OptimizerSpec("sgd", lr=lr), GRADIENTS)
    np.testing.assert_allclose(plain, np.array([1.0, -2.0]) - lr * np.sum(GRADIENTS, axis=0), rtol=1e-12)


@pytest.mark.parametrize("name, weight_decay", [("adam", 0.0), ("adamw", 0.1)])
def test_adam_and_adamw(name, weight_decay):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for t, g in enumerate(map(np.array, GRADIENTS), start=1):
        p = p * (1 - lr * weight_decay)  # AdamW, as PyTorch: decay first, outside the moments
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    spec = OptimizerSpec(name, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)
    np.testing.assert_allclose(run_optimizer(spec, GRADIENTS), p, rtol=1e-12)
    # first Adam step moves each entry by about lr against its gradient's sign
    first = run_optimizer(OptimizerSpec("adam", lr=lr), GRADIENTS[:1])
    np.testing.assert_allclose(first, [1.0 - lr, -2.0 + lr], rtol=1e-6)


def test_weight_decay_is_refused_outside_adamw():
    with pytest.raises(ValueError, match="adamw"):
        make_adapter("mlp", OptimizerSpec("adam", weight_decay=0.1))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_training_lowers_the_loss_and_is_deterministic(model):
    x, y = learnable_data(320)
    batches = np.random.default_rng(0).permutation(256).reshape(8, 32)
    results = []
    for _ in range(2):
        adapter = make_adapter(model, OptimizerSpec("adam", lr=1e-2), eval_batch_size=25, sizes=TRAINABLE[model])
        adapter.set_params(adapter.model.init_params(0))
        adapter.load_data(x[:256], y[:256], x[256:], y[256:])
        before, _ = adapter.evaluate()
        losses = [adapter.train_epoch(batches) for _ in range(8)]
        after, accuracy = adapter.evaluate()
        results.append((losses, after, adapter.get_params()))
    assert after < 0.5 * before and losses[-1] < losses[0] and accuracy > 0.8
    (losses_a, eval_a, params_a), (losses_b, eval_b, params_b) = results
    assert losses_a == losses_b and eval_a == eval_b
    for name in params_a:
        np.testing.assert_array_equal(params_a[name], params_b[name])


def test_evaluate_does_not_depend_on_the_chunk_size():
    x, y = learnable_data(50)
    results = []
    for chunk in (7, 1000):
        adapter = make_adapter("cnn", eval_batch_size=chunk)
        adapter.set_params(adapter.model.init_params(0))
        adapter.load_data(x, y, x, y)
        results.append(adapter.evaluate())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_params_round_trip_in_canonical_layout():
    adapter = make_adapter("cnn")
    params = random_params(adapter, seed=4)
    adapter.set_params(params)
    out = adapter.get_params()
    assert list(out) == list(adapter.model.param_shapes)
    for name, value in params.items():
        assert out[name].dtype == np.float32 and out[name].shape == value.shape
        np.testing.assert_array_equal(out[name], value.astype(np.float32))
    out["dense1.bias"][:] = 99  # a copy: changing it leaves the model alone
    assert adapter.get_params()["dense1.bias"][0] != 99
    with pytest.raises(ValueError, match="shape"):
        adapter.set_params({**params, "conv0.kernel": np.zeros((3, 3, 1, 9))})


def test_declarations_and_backend():
    info = discover()["numpy"]
    assert info.variant_devices == {"numpy": ("cpu",), "cupy": ("gpu",)}
    assert info.unsupported("cnn", "gpu", "numpy")
    from frameworks.numpy_adapter import blas_name

    assert make_adapter("mlp").backend == blas_name() != "unknown blas"  # the BLAS numpy was built with
    pools = make_adapter("mlp").thread_pools()
    assert blas_name() in pools.lower() and "x1" in pools  # its pool, held to the one thread asked for
