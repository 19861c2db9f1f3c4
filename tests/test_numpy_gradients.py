"""The NumPy adapter's hand-written backward pass, optimizers and training loop, checked in isolation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from frameworks.numpy_adapter import SGD, Adam, NumpyAdapter, im2col, maxpool_backward, maxpool_forward
from harness.adapter import discover
from harness.models import ModelSpec, OptimizerSpec

TINY = {"mlp": dict(hidden=(8,), dropout=0.0), "cnn": dict(channels=(2, 3), dense=5, dropout=0.0),
        "rnn": dict(hidden=5, dropout=0.0), "vit": dict(width=8, depth=2, heads=2, mlp=12, dropout=0.0)}
TRAINABLE = {"mlp": dict(hidden=(32,), dropout=0.2), "cnn": dict(channels=(8, 16), dense=32, dropout=0.2),
             "rnn": dict(hidden=16, dropout=0.2), "vit": dict(width=16, depth=1, heads=2, mlp=32, dropout=0.2)}


def make_adapter(model: str, optimizer: OptimizerSpec | None = None, seed: int = 0, **options) -> NumpyAdapter:
    optimizer = optimizer or OptimizerSpec()
    sizes = TINY[model]
    spec = ModelSpec(model, **{**sizes, **options.pop("sizes", {})})
    return NumpyAdapter(spec, optimizer, device="cpu", variant="numpy", seed=seed, threads=1, options=options)


def random_params(adapter: NumpyAdapter, seed: int) -> dict[str, np.ndarray]:
    """The initial kernels, every other parameter (biases, layer-norm scales, embeddings) moved off its initial
    value, so that every gradient path is exercised."""
    rng = np.random.default_rng(seed)
    params = adapter.model.init_params(seed)
    return {
        name: value if name.endswith("kernel") else value + 0.1 * rng.standard_normal(value.shape)
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
        ("rnn", {}, False),
        ("vit", {}, False),
        ("rnn", {"dropout": 0.5}, True),
        ("vit", {"dropout": 0.5}, True),
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


@pytest.mark.parametrize("model", ["mlp", "cnn", "rnn", "vit"])
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


# --- the LSTM's and the Vision Transformer's layers (frameworks/numpy_layers), each alone ----------------------


def assert_matches_finite_differences(loss_and_grads, values: dict[str, np.ndarray], eps: float = 1e-6) -> None:
    """loss_and_grads(values) -> (loss, {name: gradient}): every entry of every gradient against the central
    difference of the loss (the arrays are small enough to try them all)."""
    _, grads = loss_and_grads(values)
    for name, grad in grads.items():
        numeric = np.zeros_like(grad)
        for index in np.ndindex(grad.shape):
            original, losses = values[name][index], []
            for value in (original + eps, original - eps):
                values[name][index] = value
                losses.append(loss_and_grads(values)[0])
            values[name][index] = original
            numeric[index] = (losses[0] - losses[1]) / (2 * eps)
        assert np.abs(grad).max() > 1e-6, f"{name}: gradient vanishes, the check would prove nothing"
        error = np.linalg.norm(grad - numeric) / np.linalg.norm(grad + numeric)
        assert error < 1e-7, f"{name}: relative error {error:.2e}"


def projection(shape: tuple[int, ...], seed: int = 9) -> np.ndarray:
    """Random weights w of a scalar loss sum(w * y), so that dy = w."""
    return np.random.default_rng(seed).standard_normal(shape)


def normal(seed: int, **shapes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def test_lstm_backpropagation_through_time_matches_finite_differences():
    from frameworks.numpy_layers.lstm import lstm_backward, lstm_forward

    steps, n, features, hidden = 4, 3, 3, 2
    values = normal(0, x=(steps, n, features), kernel=(features, 4 * hidden), recurrent=(hidden, 4 * hidden),
                    bias=(4 * hidden,))
    w = projection((n, hidden))

    def loss_and_grads(v):
        h, saved = lstm_forward(v["x"], v["kernel"], v["recurrent"], v["bias"], np)
        grads = {name: np.empty_like(v[name]) for name in ("kernel", "recurrent", "bias")}
        lstm_backward(w, saved, v["recurrent"], grads["kernel"], grads["recurrent"], grads["bias"], np)
        return float((w * h).sum()), grads

    assert_matches_finite_differences(loss_and_grads, values)


def test_layer_norm_matches_finite_differences():
    from frameworks.numpy_layers.layer_norm import layer_norm_backward, layer_norm_forward

    values = normal(1, x=(2, 3, 5), scale=(5,), bias=(5,))
    w = projection((2, 3, 5))

    def loss_and_grads(v):
        y, saved = layer_norm_forward(v["x"], v["scale"], v["bias"], 1e-6, np)
        grads = {"scale": np.empty(5), "bias": np.empty(5)}
        grads["x"] = layer_norm_backward(w, saved, v["scale"], grads["scale"], grads["bias"])
        return float((w * y).sum()), grads

    assert_matches_finite_differences(loss_and_grads, values)


def test_gelu_is_the_exact_erf_form_and_matches_finite_differences():
    from frameworks.numpy_layers.gelu import gelu_backward, gelu_forward

    x = np.linspace(-4, 4, 17)
    exact = np.array([v * (1 + math.erf(v / math.sqrt(2))) / 2 for v in x])
    np.testing.assert_allclose(gelu_forward(x, np)[0], exact, rtol=1e-15, atol=1e-15)
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    assert np.abs(tanh_form - exact).max() > 1e-4  # the approximation some frameworks default to is another function
    w = projection(x.shape)

    def loss_and_grads(v):
        y, saved = gelu_forward(v["x"], np)
        return float((w * y).sum()), {"x": gelu_backward(w, saved, np)}

    assert_matches_finite_differences(loss_and_grads, {"x": x + 0.01})


def test_attention_matches_finite_differences():
    from frameworks.numpy_layers.attention import attention_backward, attention_forward

    width, heads = 6, 3
    kernels = {f"{name}.kernel": (width, width) for name in ("query", "key", "value", "out")}
    values = normal(2, x=(2, 4, width), **kernels)
    w = projection((2, 4, width))

    def loss_and_grads(v):
        y, saved = attention_forward(v["x"], v, heads, np)
        grads = {name: np.empty_like(value) for name, value in v.items() if name != "x"}
        grads["x"] = attention_backward(w, saved, v, grads, heads, np)
        return float((w * y).sum()), grads

    assert_matches_finite_differences(loss_and_grads, values)


def test_an_encoder_block_matches_finite_differences():
    from frameworks.numpy_layers.vit import block_backward, block_forward
    from harness.models import model_spec

    spec = model_spec("vit", width=4, heads=2, mlp=6)
    params, rng = spec.init_params(5), np.random.default_rng(4)
    values = {"x": rng.standard_normal((2, 3, 4))}
    values |= {name: params[f"block0.{name}"] + 0.1 * rng.standard_normal(shape)
               for name, shape in spec.block_shapes.items()}
    w = projection((2, 3, 4))

    def loss_and_grads(v):
        y, saved = block_forward(v["x"], v, spec.heads, spec.epsilon, np)
        grads = {name: np.empty_like(value) for name, value in v.items() if name != "x"}
        grads["x"] = block_backward(w, saved, v, grads, spec.heads, np)
        return float((w * y).sum()), grads

    assert_matches_finite_differences(loss_and_grads, values)


def lstm_reference_logits(params: dict, x: np.ndarray) -> np.ndarray:
    """The rnn model one image and one step at a time, gates by name in the canonical order i, f, g, o."""
    kernel, recurrent, bias = params["lstm.kernel"], params["lstm.recurrent_kernel"], params["lstm.bias"]
    hidden = recurrent.shape[0]
    logits = []
    for image in x[..., 0]:
        h, c = np.zeros(hidden), np.zeros(hidden)
        for row in image:  # row t of the image is step t
            z = row @ kernel + h @ recurrent + bias
            i, f, g, o = (z[k * hidden:(k + 1) * hidden] for k in range(4))
            c = 1 / (1 + np.exp(-f)) * c + 1 / (1 + np.exp(-i)) * np.tanh(g)
            h = 1 / (1 + np.exp(-o)) * np.tanh(c)
        logits.append(h @ params["classifier.kernel"] + params["classifier.bias"])
    return np.array(logits)


def vit_reference_logits(spec, params: dict, x: np.ndarray) -> np.ndarray:
    """The vit model one image, token and head at a time, as harness/models/transformer.py writes it."""
    p, d = spec.patch, spec.head_width

    def norm(v, prefix):
        return (v - v.mean()) / math.sqrt(v.var() + 1e-6) * params[f"{prefix}.scale"] + params[f"{prefix}.bias"]

    def gelu(v):
        return v * (1 + np.vectorize(math.erf)(v / math.sqrt(2))) / 2

    logits = []
    for image in x[..., 0]:
        patches = [image[i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(-1)  # row-major within and across
                   for i in range(spec.grid) for j in range(spec.grid)]
        kernel = params["patch.kernel"].reshape(p * p, -1)
        tokens = [params["embedding.class_token"]] + [patch @ kernel + params["patch.bias"] for patch in patches]
        tokens = np.array(tokens) + params["embedding.position"]
        for b in range(spec.depth):
            block = {name: params[f"block{b}.{name}"] for name in spec.block_shapes}
            normed = np.array([norm(t, f"block{b}.norm1") for t in tokens])
            q, k, v = (normed @ block[f"{name}.kernel"] for name in ("query", "key", "value"))
            heads = []
            for h in range(spec.heads):
                cols = slice(h * d, (h + 1) * d)
                scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)
                weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
                heads.append(weights @ v[:, cols])
            tokens = tokens + np.concatenate(heads, axis=1) @ block["out.kernel"]
            normed = np.array([norm(t, f"block{b}.norm2") for t in tokens])
            hidden = gelu(normed @ block["mlp0.kernel"] + block["mlp0.bias"])
            tokens = tokens + hidden @ block["mlp1.kernel"] + block["mlp1.bias"]
        logits.append(norm(tokens[0], "norm") @ params["classifier.kernel"] + params["classifier.bias"])
    return np.array(logits)


@pytest.mark.parametrize("model", ["rnn", "vit"])
def test_lstm_and_vit_forward_match_the_spec_written_the_slow_way(model):
    adapter = make_adapter(model, dtype="float64")
    params = random_params(adapter, seed=5)
    adapter.set_params(params)
    x, _ = random_batch(3, seed=6)
    logits, _ = adapter.forward(adapter._model_input(x), train=False)
    expected = lstm_reference_logits(params, x) if model == "rnn" else vit_reference_logits(adapter.model, params, x)
    np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("model, width", [("rnn", "hidden"), ("vit", "width")])
def test_lstm_and_vit_dropout_sits_before_the_classifier(model, width):
    adapter = make_adapter(model, sizes={"dropout": 0.5})
    x, _ = random_batch(64, seed=7)
    _, saved = adapter.forward(adapter._model_input(x), train=True)
    mask = saved[-1]  # the networks keep the mask last
    assert mask.shape == (64, getattr(adapter.model, width)) and set(np.unique(mask)) == {0.0, 2.0}
    assert adapter.forward(adapter._model_input(x), train=False)[1][-1] is None
    no_dropout = make_adapter(model, sizes={"dropout": 0.0})
    state = no_dropout.rng.bit_generator.state
    assert no_dropout.forward(no_dropout._model_input(x), train=True)[1][-1] is None
    assert no_dropout.rng.bit_generator.state == state  # rate 0 draws nothing


def test_patches_are_row_major_within_and_across():
    from frameworks.numpy_layers.vit import patchify

    image = np.arange(28 * 28, dtype=float).reshape(1, 28, 28, 1)
    patches = patchify(image, 7)
    assert patches.shape == (1, 16, 49)
    assert patches[0, 0, :8].tolist() == [0, 1, 2, 3, 4, 5, 6, 28]  # the first patch's first row, then its second
    assert patches[0, 1, 0] == 7 and patches[0, 4, 0] == 7 * 28  # patch (0, 1) starts at column 7, (1, 0) at row 7
