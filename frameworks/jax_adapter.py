"""The JAX adapter: Flax NNX models trained with Optax, as in Flax's MNIST tutorial.

The models are nnx.Modules built from Flax's own layers: the MLP and CNN of nnx.Linear and
nnx.Conv; the LSTM an nnx.RNN of an nnx.OptimizedLSTMCell; the ViT a stride-p nnx.Conv patch
projection and pre-norm encoder blocks of nnx.LayerNorm, nnx.MultiHeadAttention (no biases) and
an nnx.Linear MLP. The optimizer is an nnx.Optimizer around an Optax transform, as the tutorial
writes them. For speed the hot loop takes the route Flax's performance guide recommends:
split the model and optimizer into a graph definition and a pytree of state once, and
jax.jit a pure function of that state, so no Python object graph is walked per step.
Two variants:
  jit   one jitted train step per batch, called from Python;
  scan  the whole epoch as one jitted jax.lax.scan over the harness's batch indices, the
        dataset resident on the device.
Both compile in the first epoch, which is where the harness reports compile time.

Flax's layouts are the canonical ones up to a reshape, so parameters cross the boundary by
name and a reshape (each model's canonical()): dense kernels are (in, out), conv kernels HWIO,
and NHWC images flatten in the canonical order; OptimizedLSTMCell's fused (in, 4H) input kernel
(no bias) and (H, 4H) recurrent kernel (with the one bias) hold the gates in the canonical order
i, f, g, o; and MultiHeadAttention's query, key and value kernels are (D, heads, d) and its
output kernel (heads, d, D), the canonical (D, D) with the heads' columns (rows) split off.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from harness.adapter import Adapter, DeviceUnavailable, Unsupported, hidden_pool
from harness.models import CLASSES, IMAGE_SHAPE, ModelSpec, OptimizerSpec
from harness.models.operations import FIRST_TRANSPOSED, SECOND_TRANSPOSED

jax.config.update("jax_default_matmul_precision", "highest")  # full float32 products: no TF32 on GPUs


def kernels_and_biases(layers: dict[str, nnx.Module]) -> dict[str, nnx.Param]:
    """prefix.kernel and prefix.bias of each nnx.Linear or nnx.Conv, whose layouts are the canonical ones."""
    return {f"{prefix}.{kind}": getattr(layer, kind) for prefix, layer in layers.items() for kind in ("kernel", "bias")}


class MLP(nnx.Module):
    """784 -> hidden (ReLU)... -> dropout -> 10; attributes named after the canonical prefixes."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        sizes = [int(np.prod(IMAGE_SHAPE)), *spec.hidden, CLASSES]
        self.dense = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for layer in self.dense[:-1]:
            x = nnx.relu(layer(x))
        return self.dense[-1](self.dropout(x))

    def canonical(self) -> dict[str, nnx.Param]:
        """Canonical name -> the parameter that holds it."""
        return kernels_and_biases({f"dense{i}": layer for i, layer in enumerate(self.dense)})


class CNN(nnx.Module):
    """[conv kxk VALID -> ReLU -> maxpool 2x2] per channel count -> flatten (NHWC) -> dense ReLU -> dropout -> 10."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        channels = [IMAGE_SHAPE[2], *spec.channels]
        self.conv = nnx.List([nnx.Conv(a, b, (k, k), padding="VALID", rngs=rngs)
                              for a, b, k in zip(channels, channels[1:], spec.kernel_sizes)])
        side, _ = spec.feature_map_side(len(spec.channels))
        self.dense = nnx.List([nnx.Linear(side * side * channels[-1], spec.dense, rngs=rngs),
                               nnx.Linear(spec.dense, CLASSES, rngs=rngs)])
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.conv:
            x = max_pool_2x2(nnx.relu(conv(x)))
        x = nnx.relu(self.dense[0](x.reshape(x.shape[0], -1)))
        return self.dense[1](self.dropout(x))

    def canonical(self) -> dict[str, nnx.Param]:
        """Canonical name -> the parameter that holds it."""
        return kernels_and_biases({f"conv{i}": layer for i, layer in enumerate(self.conv)}
                                  | {f"dense{i}": layer for i, layer in enumerate(self.dense)})


class LstmClassifier(nnx.Module):
    """The 28 rows of an image as 28 steps of nnx.RNN (batch first), the last hidden state -> dropout -> dense 10.

    OptimizedLSTMCell holds the canonical tensors as they are: its input kernel (no bias) and its recurrent
    kernel (with the one bias) each have the four gates side by side in the order i, f, g, o, each one product
    per step. LSTMCell holds the same numbers in eight per-gate layers, eight products per step where two do.
    """

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        self.lstm = nnx.RNN(nnx.OptimizedLSTMCell(IMAGE_SHAPE[1], spec.hidden, rngs=rngs), return_carry=True)
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)
        self.classifier = nnx.Linear(spec.hidden, CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        rows = x.reshape(x.shape[0], IMAGE_SHAPE[0], IMAGE_SHAPE[1])  # (N, steps, features), batch first
        (_, h), _ = self.lstm(rows)  # the carry is (c, h) after the last step
        return self.classifier(self.dropout(h))

    def canonical(self) -> dict[str, nnx.Param]:
        """Canonical name -> the parameter that holds it: the cell's input kernel (28, 4H), its recurrent kernel
        (H, 4H) and the recurrent layer's bias (4H,), the one bias, as they are."""
        cell = self.lstm.cell
        return {"lstm.kernel": cell.dense_i.kernel, "lstm.recurrent_kernel": cell.dense_h.kernel,
                "lstm.bias": cell.dense_h.bias, **kernels_and_biases({"classifier": self.classifier})}


class EncoderBlock(nnx.Module):
    """x + attention(LN1(x)), then + mlp1(GELU(mlp0(LN2(x)))): a pre-norm Transformer encoder block."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        norm = partial(nnx.LayerNorm, spec.width, epsilon=spec.epsilon, rngs=rngs)  # the spec's (Flax's default too)
        self.norm1, self.norm2 = norm(), norm()
        self.attention = nnx.MultiHeadAttention(spec.heads, spec.width, use_bias=False, decode=False, rngs=rngs)
        self.mlp0 = nnx.Linear(spec.width, spec.mlp, rngs=rngs)
        self.mlp1 = nnx.Linear(spec.mlp, spec.width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x))  # self-attention: the keys and values are the queries' tokens
        return x + self.mlp1(jax.nn.gelu(self.mlp0(self.norm2(x)), approximate=False))

    def canonical(self, prefix: str) -> dict[str, nnx.Param]:
        """Canonical name -> the parameter that holds it. The attention's query, key and value kernels are
        (D, heads, d) and its out kernel (heads, d, D): the canonical (D, D) kernels reshaped, as head j // d
        owns column (row) j."""
        found = {f"{prefix}{norm}.{kind}": getattr(getattr(self, norm), kind)
                 for norm in ("norm1", "norm2") for kind in ("scale", "bias")}
        found |= {f"{prefix}{name}.kernel": getattr(self.attention, name).kernel
                  for name in ("query", "key", "value", "out")}
        return found | kernels_and_biases({f"{prefix}mlp0": self.mlp0, f"{prefix}mlp1": self.mlp1})


class VisionTransformer(nnx.Module):
    """p x p patches by a stride-p nnx.Conv -> [class token; patches] + positions -> encoder blocks -> layer norm of
    the class token -> dropout -> dense 10."""

    def __init__(self, spec: ModelSpec, rngs: nnx.Rngs) -> None:
        p = spec.patch
        self.patch = nnx.Conv(IMAGE_SHAPE[2], spec.width, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
        self.class_token = nnx.Param(jnp.zeros(spec.width))
        self.position = nnx.Param(jnp.zeros((spec.tokens, spec.width)))
        self.blocks = nnx.List([EncoderBlock(spec, rngs) for _ in range(spec.depth)])
        self.norm = nnx.LayerNorm(spec.width, epsilon=spec.epsilon, rngs=rngs)
        self.dropout = nnx.Dropout(spec.dropout, rngs=rngs)
        self.classifier = nnx.Linear(spec.width, CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        patches = self.patch(x)  # (N, 28/p, 28/p, D): the grid, flattened row-major below, is the token order
        patches = patches.reshape(x.shape[0], -1, patches.shape[-1])
        class_tokens = jnp.broadcast_to(self.class_token[...], (x.shape[0], 1, patches.shape[-1]))
        x = jnp.concatenate([class_tokens, patches], axis=1) + self.position[...]
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.dropout(self.norm(x[:, 0])))

    def canonical(self) -> dict[str, nnx.Param]:
        """Canonical name -> the parameter that holds it: the patch kernel is HWIO, the class token and the
        positions are held in the canonical shapes and broadcast over the batch."""
        found = kernels_and_biases({"patch": self.patch})
        found |= {"embedding.class_token": self.class_token, "embedding.position": self.position}
        for b, block in enumerate(self.blocks):
            found |= block.canonical(f"block{b}.")
        return found | {"norm.scale": self.norm.scale, "norm.bias": self.norm.bias,
                        **kernels_and_biases({"classifier": self.classifier})}


NETWORKS = {"mlp": MLP, "cnn": CNN, "rnn": LstmClassifier, "vit": VisionTransformer}


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pool, stride 2, floor, as a reshape and a max: nnx.max_pool's values.

    nnx.max_pool is lax.reduce_window, whose gradient (select_and_scatter) XLA:CPU runs 8x slower
    than this one's (measured: 31 ms against 4 ms for the first pool of a 128 batch), which made
    it most of the CNN's step. The gradients differ only on exact ties: after a ReLU those are
    zeros, whose gradient is zero either way.
    """
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def learning_rate(spec: OptimizerSpec):
    """The rate as an Optax schedule: a staircase exponential_decay (one stair per epoch), or
    warmup_cosine_decay_schedule; a constant rate stays a number."""
    if spec.per_step:
        return optax.warmup_cosine_decay_schedule(spec.lr * spec.lr_start, spec.lr, spec.warmup_steps,
                                                  spec.schedule_steps, spec.lr * spec.lr_end)
    if spec.decays:
        return optax.exponential_decay(spec.lr, spec.steps_per_epoch, spec.lr_decay, staircase=True)
    return spec.lr


def optax_transform(spec: OptimizerSpec) -> optax.GradientTransformation:
    """OptimizerSpec onto Optax: its sgd trace (g + momentum * v) and adam/adamw match PyTorch's forms."""
    b1, b2 = spec.betas
    lr = learning_rate(spec)
    if spec.name == "sgd":
        return optax.sgd(lr, momentum=spec.momentum or None, nesterov=spec.nesterov)
    if spec.name == "adam":
        return optax.adam(lr, b1=b1, b2=b2, eps=spec.eps)
    return optax.adamw(lr, b1=b1, b2=b2, eps=spec.eps, weight_decay=spec.weight_decay)


def jax_device(device: str) -> jax.Device:
    if device == "cpu":
        return jax.devices("cpu")[0]
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        raise DeviceUnavailable("JAX has no GPU backend here: pip install -U 'jax[cuda12]' on a CUDA machine") from None


def loss_fn(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def train_step(graphdef, state, x_all, y_all, indices):
    """One optimizer step on the batch x_all[indices], as a pure function of the split state."""
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(loss_fn)(model, x_all[indices], y_all[indices])
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


@partial(jax.jit, static_argnums=0, donate_argnums=1)
def jit_step(graphdef, state, x_all, y_all, indices):
    """One step; its indices, like the data, are already on the device, so nothing crosses from the host
    between steps, and an epoch of any length reuses the one compiled step."""
    return train_step(graphdef, state, x_all, y_all, indices)


@partial(jax.jit, static_argnums=0, donate_argnums=1)
def scan_epoch(graphdef, state, x_all, y_all, batches):
    """Every batch of the epoch inside one compiled loop: no Python between steps."""

    def step(state, indices):
        return train_step(graphdef, state, x_all, y_all, indices)

    state, losses = jax.lax.scan(step, state, batches)
    return state, losses.mean()


@nnx.jit
def eval_chunk(model: nnx.Module, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed cross-entropy and number of correct predictions of one chunk."""
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()
    return loss, (logits.argmax(axis=1) == y).sum()


class JaxAdapter(Adapter):
    """Flax NNX + Optax; `jit` (a jitted step per batch) or `scan` (a jitted lax.scan per epoch).

    Dropout (nnx.Dropout before the last dense layer) draws from nnx.Rngs(seed), whose key
    travels in the split state, so a seed fixes every mask.
    """

    name = "jax"
    extra = "jax"
    modules = ("jax", "flax", "optax")
    variants = ("jit", "scan")
    devices = ("cpu", "gpu")
    models = ("mlp", "cnn", "rnn", "vit")
    accepts = {"allow_slow": "bool"}  # run the scan CNN on a CPU anyway

    def build(self) -> None:
        self.jax_device = jax_device(self.device)
        scan_cnn_on_cpu = self.variant == "scan" and self.model.name == "cnn" and self.jax_device.platform == "cpu"
        if scan_cnn_on_cpu and not self.options.get("allow_slow"):
            # Measured here: 1.3 s per batch inside lax.scan against 0.1 s for the same step jitted alone.
            raise Unsupported("XLA:CPU runs the CNN's convolutions ~13x slower inside lax.scan than jitted alone; "
                              "the scan CNN is a GPU row (options allow_slow = true runs it anyway)")
        with jax.default_device(self.jax_device):
            self.net = NETWORKS[self.model.name](self.model, nnx.Rngs(self.seed))
            self.optimizer_state = nnx.Optimizer(self.net, optax_transform(self.optimizer), wrt=nnx.Param)

    def _variables(self) -> dict[str, nnx.Param]:
        """Canonical name -> the Flax parameter that holds it, in the canonical order; its shape is the canonical
        one or a reshape of it (attention's per-head axes)."""
        found = self.net.canonical()
        return {name: found[name] for name in self.model.param_shapes}

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        shapes = self.model.param_shapes
        for name, variable in self._variables().items():
            value = np.asarray(params[name], np.float32)
            if value.shape != shapes[name]:
                raise ValueError(f"{name} has shape {value.shape}, expected {shapes[name]}")
            variable[...] = jax.device_put(value.reshape(variable.shape), self.jax_device)
        # The optimizer's moments start at zero whatever the parameters: rebuild it around the new ones.
        self.optimizer_state = nnx.Optimizer(self.net, optax_transform(self.optimizer), wrt=nnx.Param)
        # Commit every array (counters and RNG keys too) to the device, as the step's outputs are: jit
        # specialises on committed-ness, and a mix would compile the step twice, the second time in epoch 2.
        state = nnx.state((self.net, self.optimizer_state))
        nnx.update((self.net, self.optimizer_state), jax.device_put(state, self.jax_device))

    def get_params(self) -> dict[str, np.ndarray]:
        shapes = self.model.param_shapes
        return {name: np.asarray(variable[...], np.float32).reshape(shapes[name])
                for name, variable in self._variables().items()}

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        put = partial(jax.device_put, device=self.jax_device)
        self.x_train, self.y_train = put(np.asarray(x_train, np.float32)), put(np.asarray(y_train, np.int32))
        self.x_eval, self.y_eval = put(np.asarray(x_eval, np.float32)), put(np.asarray(y_eval, np.int32))

    def train_epoch(self, batches: np.ndarray) -> float:
        self.net.train()
        graphdef, state = nnx.split((self.net, self.optimizer_state))
        batches = np.asarray(batches, np.int32)
        if self.variant == "scan":
            batches = jax.device_put(batches, self.jax_device)  # one transfer per epoch
            state, mean_loss = scan_epoch(graphdef, state, self.x_train, self.y_train, batches)
        else:
            losses = []
            # every step's indices put on the device at once, before the first step (splitting one array there
            # would compile an op with an output per step, seconds for a full epoch)
            for indices in jax.device_put(list(batches), self.jax_device):
                state, loss = jit_step(graphdef, state, self.x_train, self.y_train, indices)
                losses.append(loss)
                if self.sync_each_step:  # only the GPU check's contrast run: a read-back every step
                    float(loss)
            mean_loss = jnp.mean(jnp.stack(losses))
        nnx.update((self.net, self.optimizer_state), state)
        return float(jax.block_until_ready(mean_loss))

    def evaluate(self) -> tuple[float, float]:
        self.net.eval()
        return super().evaluate()

    def eval_chunk(self, rows: slice):
        return eval_chunk(self.net, self.x_eval[rows], self.y_eval[rows])

    @property
    def backend(self) -> str:
        return f"xla-{self.jax_device.platform}"

    def thread_pools(self) -> str:
        if self.jax_device.platform != "cpu":
            return f"xla-{self.jax_device.platform}"
        return hidden_pool("xla-cpu", self.threads)

    def peak_device_memory_mb(self) -> float | None:
        stats = self.jax_device.memory_stats() if self.jax_device.platform != "cpu" else None
        return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None

    def device_memory_in_use_mb(self) -> float | None:
        stats = self.jax_device.memory_stats() if self.jax_device.platform != "cpu" else None
        return stats["bytes_in_use"] / 2**20 if stats and "bytes_in_use" in stats else None

    @property
    def steps_in_python(self) -> bool:
        return self.variant == "jit"

    @staticmethod
    def matmul_probe(device: str, size: int, threads: int):
        """One jitted float32 product at "highest" precision (XLA's own dot emitter or runtime library)."""
        target = jax_device(device)
        rng = np.random.default_rng(0)
        a, b = (jax.device_put(rng.random((size, size), np.float32), target) for _ in range(2))
        multiply = jax.jit(jnp.matmul)
        return (lambda: multiply(a, b).block_until_ready()), f"xla-{target.platform} (jaxlib {jax.__version__})"

    @staticmethod
    def op_probe(device: str, operation: dict, threads: int):
        """One step operation jitted alone, as XLA compiles it inside the step: a dot (batched over samples and heads
        for attention's products) with the transposition folded in; the convolution, and each of its gradients as
        the vjp of the convolution in one argument."""
        from harness.execute.probes import operands

        target = jax_device(device)
        given = {name: jax.device_put(value, target) for name, value in operands(operation).items()}
        role = operation["role"]

        def conv(x, w):
            return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

        if operation["kind"] in ("matmul", "bmm"):  # bmm: attention's products, one per sample and head
            def product(a, b):
                a = jnp.swapaxes(a, -1, -2) if role in FIRST_TRANSPOSED else a
                b = jnp.swapaxes(b, -1, -2) if role in SECOND_TRANSPOSED else b
                return a @ b

            work, args = jax.jit(product), (given["a"], given["b"])
        else:
            gradient = {"forward": conv,
                        "weight gradient": lambda x, w, dy: jax.vjp(lambda w_: conv(x, w_), w)[1](dy)[0],
                        "input gradient": lambda x, w, dy: jax.vjp(lambda x_: conv(x_, w), x)[1](dy)[0]}[role]
            work = jax.jit(gradient)
            args = (given["x"], given["w"]) if role == "forward" else (given["x"], given["w"], given["dy"])
        return lambda: work(*args).block_until_ready()  # the result, once computed

    @staticmethod
    def matmul_on_device(device: str, a: np.ndarray, b: np.ndarray):
        target = jax_device(device)
        product = np.asarray(jax.jit(jnp.matmul)(jax.device_put(a, target), jax.device_put(b, target)))
        facts = {"precision_set": f"jax_default_matmul_precision={jax.config.jax_default_matmul_precision}"}
        if target.platform == "gpu":
            from jax.extend import backend

            facts["runtime"] = backend.get_backend("gpu").platform_version  # names the CUDA and cuDNN builds
        return product, facts
