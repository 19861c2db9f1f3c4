"""The Keras 3 adapter: keras.io's MNIST examples, on the TensorFlow, JAX or PyTorch backend.

A keras.Sequential model, model.compile(...), model.fit(...) and model.evaluate(...), as in
keras.io's mnist_convnet: the MLP, the CNN and the LSTM (keras.layers.LSTM over the image's rows)
are Sequential stacks; the ViT is a functional model, as keras.io's Transformer examples write
them: a stride-7 Conv2D for the patches, a small layer for the class token and positions, and
encoder-block layers of LayerNormalization, MultiHeadAttention and exact GELU. The backend is the variant:
the harness sets KERAS_BACKEND from `variant_env` before this module (and so Keras) is imported, in
the cell's own process.

Every Keras variable holds its canonical tensor as it is, but MultiHeadAttention's kernels, which
are the canonical (D, D) ones reshaped per head: set_params and get_params reshape them.

The harness owns the batch order, so each epoch fits on the training arrays gathered in
that order with shuffle=False: Keras then takes the batches exactly as the harness chose them.

jit_compile (options["jit_compile"], default "auto") is Keras's own switch: "auto" compiles
with XLA on the JAX backend, and on the TensorFlow backend where a GPU is present (Keras keeps
XLA off on a CPU-only TensorFlow), and runs the PyTorch backend eagerly; true asks for XLA and,
on PyTorch, torch.compile; false runs every backend without them. steps_per_execution
(options["steps_per_execution"]) defaults to 32 where the backend allows it.

Optimizers are Keras's own, whose forms differ from PyTorch's in two places, both declared below
and checked by parity against the NumPy reference computing the same form (docs/DESIGN.md):
Adam folds the bias corrections into the rate and adds eps to sqrt(v), which acts as PyTorch's eps
divided by sqrt(1 - beta2^t) (32x larger at the first step); SGD's momentum holds steps already
scaled by their own rate (m <- mu m - lr g; p <- p + m), which under a decaying rate carries the
old rate into the new epoch.

Training computes the loss and nothing else, as in every other adapter; evaluation runs through
a second Model over the same layers, compiled with the accuracy metric.
"""

from __future__ import annotations

import contextlib
import os

# The PyTorch backend picks its device once, at import, from this variable (a keras.device scope
# loses its gradients, Keras 3.15); the worker names the cell's device in MNIST_BENCH_DEVICE.
os.environ.setdefault("KERAS_TORCH_DEVICE", "cuda" if os.environ.get("MNIST_BENCH_DEVICE") == "gpu" else "cpu")

import keras  # noqa: E402  (after the device choice above)
import numpy as np  # noqa: E402

from harness.adapter import Adapter, DeviceUnavailable, Unsupported, hidden_pool
from harness.models import CLASSES, IMAGE_SHAPE, ModelSpec, OptimizerSpec
from harness.models.transformer import POSITION_STD


def feedforward(spec: ModelSpec) -> list:
    """The MLP's or the CNN's layers; layers with weights carry the canonical prefixes as names."""
    layers: list = []
    if spec.name == "mlp":
        layers.append(keras.layers.Flatten())
        hidden = spec.hidden
    else:
        for i, (channels, k) in enumerate(zip(spec.channels, spec.kernel_sizes)):
            layers += [keras.layers.Conv2D(channels, (k, k), activation="relu", name=f"conv{i}"),
                       keras.layers.MaxPooling2D(pool_size=(2, 2))]
        layers.append(keras.layers.Flatten())
        hidden = (spec.dense,)
    layers += [keras.layers.Dense(size, activation="relu", name=f"dense{i}") for i, size in enumerate(hidden)]
    return layers + classifier(spec, f"dense{len(hidden)}")


def recurrent(spec: ModelSpec) -> list:
    """The 28 rows as 28 steps of keras.layers.LSTM, its last hidden state -> dropout -> dense 10.

    Its fused kernel (28, 4H), recurrent_kernel (H, 4H) and single bias (4H) are the canonical tensors, in
    the same gate order (Keras's i, f, c, o: c is the cell candidate, the spec's g), so they cross the boundary
    unchanged. unit_forget_bias (the default) only initialises the bias, which set_params then overwrites; the
    backends' fused kernels with two biases (cuDNN on TensorFlow and JAX GPUs, PyTorch's LSTM on CUDA) get this
    one and zeros.
    """
    rows = keras.layers.Reshape(IMAGE_SHAPE[:2])  # (N, 28, 28, 1) -> (N, steps, features)
    return [rows, keras.layers.LSTM(spec.hidden, name="lstm"), *classifier(spec, "classifier")]


def classifier(spec: ModelSpec, name: str) -> list:
    """Dropout (skipped at rate 0), then the dense layer to the classes."""
    dropout = [keras.layers.Dropout(spec.dropout)] if spec.dropout > 0 else []
    return [*dropout, keras.layers.Dense(CLASSES, name=name)]


class ClassTokenAndPosition(keras.layers.Layer):
    """Puts the learned class token before the patch tokens and adds every token's learned position."""

    def __init__(self, tokens: int, width: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.class_token = self.add_weight(shape=(width,), initializer="zeros", name="class_token")
        self.position = self.add_weight(shape=(tokens, width), name="position",
                                        initializer=keras.initializers.RandomNormal(stddev=POSITION_STD))

    def call(self, patches):
        batch, _, width = keras.ops.shape(patches)
        class_tokens = keras.ops.broadcast_to(self.class_token, (batch, 1, width))
        return keras.ops.concatenate([class_tokens, patches], axis=1) + self.position


class EncoderBlock(keras.layers.Layer):
    """x + attention(LN1(x)), then + MLP(LN2(x)) with exact GELU: a pre-norm Transformer encoder block."""

    def __init__(self, spec: ModelSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(epsilon=spec.epsilon)
        self.attention = keras.layers.MultiHeadAttention(num_heads=spec.heads, key_dim=spec.head_width,
                                                         use_bias=False)
        self.norm2 = keras.layers.LayerNormalization(epsilon=spec.epsilon)
        self.mlp0 = keras.layers.Dense(spec.mlp)
        self.mlp1 = keras.layers.Dense(spec.width)

    def call(self, x):
        normed = self.norm1(x)
        x = x + self.attention(normed, normed)
        return x + self.mlp1(keras.activations.gelu(self.mlp0(self.norm2(x)), approximate=False))


def vision_transformer(spec: ModelSpec) -> keras.Model:
    """A functional model: 7x7 patches by a stride-7 Conv2D (its HWIO kernel is the canonical one, its output grid
    flattened row-major the canonical token order) -> class token and positions -> encoder blocks -> the class
    token -> LayerNormalization -> dropout -> dense 10."""
    images = keras.Input(shape=IMAGE_SHAPE)
    patches = keras.layers.Conv2D(spec.width, spec.patch, strides=spec.patch, name="patch")(images)
    x = ClassTokenAndPosition(spec.tokens, spec.width, name="embedding")(
        keras.layers.Reshape((spec.patches, spec.width))(patches))
    for b in range(spec.depth):
        x = EncoderBlock(spec, name=f"block{b}")(x)
    x = keras.layers.LayerNormalization(epsilon=spec.epsilon, name="norm")(x[:, 0])
    for layer in classifier(spec, "classifier"):
        x = layer(x)
    return keras.Model(images, x)


def build_model(spec: ModelSpec) -> keras.Model:
    """The spec as a Keras model: a Sequential stack, or the ViT as a functional model."""
    if spec.name == "vit":
        return vision_transformer(spec)
    return keras.Sequential([keras.Input(shape=IMAGE_SHAPE), *(recurrent if spec.name == "rnn" else feedforward)(spec)])


def keras_variables(net: keras.Model, spec: ModelSpec) -> dict[str, keras.Variable]:
    """Canonical name -> the Keras variable that holds it, in the canonical order.

    Every variable has the canonical layout, up to a reshape in MultiHeadAttention: its query, key and value
    kernels are (D, heads, d), the canonical (D, D) with the output columns split head by head, and its output
    kernel (heads, d, D), the rows split the same way.
    """
    def dense(prefix: str, layer) -> dict:
        return {f"{prefix}.kernel": layer.kernel, f"{prefix}.bias": layer.bias}

    def norm(prefix: str, layer) -> dict:
        return {f"{prefix}.scale": layer.gamma, f"{prefix}.bias": layer.beta}

    if spec.name in ("mlp", "cnn"):
        found = {}
        for prefix, _ in spec.layers:
            found |= dense(prefix, net.get_layer(prefix))
    elif spec.name == "rnn":
        cell = net.get_layer("lstm").cell
        found = {"lstm.kernel": cell.kernel, "lstm.recurrent_kernel": cell.recurrent_kernel, "lstm.bias": cell.bias}
        found |= dense("classifier", net.get_layer("classifier"))
    else:
        embedding = net.get_layer("embedding")
        found = dense("patch", net.get_layer("patch"))
        found |= {"embedding.class_token": embedding.class_token, "embedding.position": embedding.position}
        for b in range(spec.depth):
            block = net.get_layer(f"block{b}")
            attention = block.attention
            found |= norm(f"block{b}.norm1", block.norm1)
            found |= {f"block{b}.{name}.kernel": getattr(attention, f"{name}_dense").kernel
                      for name in ("query", "key", "value")}
            found[f"block{b}.out.kernel"] = attention.output_dense.kernel
            found |= norm(f"block{b}.norm2", block.norm2) | dense(f"block{b}.mlp0", block.mlp0)
            found |= dense(f"block{b}.mlp1", block.mlp1)
        found |= norm("norm", net.get_layer("norm")) | dense("classifier", net.get_layer("classifier"))
    return {name: found[name] for name in spec.param_shapes}


def learning_rate(spec: OptimizerSpec):
    """The rate as a Keras schedule: ExponentialDecay in stairs of one epoch, or CosineDecay with its linear
    warm-up; a constant rate stays a number."""
    schedules = keras.optimizers.schedules
    if spec.per_step:
        return schedules.CosineDecay(spec.lr * spec.lr_start, spec.schedule_steps - spec.warmup_steps,
                                     alpha=spec.lr_end, warmup_target=spec.lr, warmup_steps=spec.warmup_steps)
    if spec.decays:
        return schedules.ExponentialDecay(spec.lr, spec.steps_per_epoch, spec.lr_decay, staircase=True)
    return spec.lr


def keras_optimizer(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    b1, b2 = spec.betas
    lr = learning_rate(spec)
    if spec.name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=spec.momentum, nesterov=spec.nesterov)
    if spec.name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=spec.eps)
    return keras.optimizers.AdamW(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=spec.eps,
                                  weight_decay=spec.weight_decay)


def prepare_backend(backend: str, device: str, threads: int):
    """Threads and full float32 products for the backend; a device scope for Keras, or Unsupported."""
    if backend == "tensorflow":
        import tensorflow as tf

        with contextlib.suppress(RuntimeError):  # already set in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.config.experimental.enable_tensor_float_32_execution(False)
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    elif backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        has_gpu = any(d.platform == "gpu" for d in jax.devices())
    else:
        import torch

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # possible only before the first parallel work
            torch.set_num_interop_threads(threads)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        has_gpu = torch.cuda.is_available()
    if device == "gpu" and not has_gpu:
        raise DeviceUnavailable(f"Keras's {backend} backend sees no GPU here")
    if backend == "torch":  # placed at import by KERAS_TORCH_DEVICE
        return contextlib.nullcontext
    return lambda: keras.device("gpu:0" if device == "gpu" else "cpu:0")


def default_steps_per_execution(backend: str) -> int:
    """Keras's own advice for small models: run several steps per call, here 32.

    On TensorFlow they run in one tf.function (a while loop), which took the MLP from 33,000 to
    41,000 samples/s here; on JAX the steps are still called one by one, but the callbacks run 32x
    less often; the PyTorch backend accepts only 1.
    """
    return 1 if backend == "torch" else 32


class KerasAdapter(Adapter):
    """Keras 3 Sequential (and, for the ViT, functional) models, compiled and fitted as keras.io does, on the
    backend the variant names.

    Dropout (keras.layers.Dropout before the last dense layer) is seeded by keras.utils.set_random_seed.
    """

    name = "keras"
    extra = "keras"
    modules = ("keras",)
    variants = ("tensorflow", "jax", "torch")
    models = ("mlp", "cnn", "rnn", "vit")
    devices = ("cpu", "gpu")
    variant_env = {
        "tensorflow": {"KERAS_BACKEND": "tensorflow"},
        "jax": {"KERAS_BACKEND": "jax"},
        "torch": {"KERAS_BACKEND": "torch"},
    }
    variant_modules = {"tensorflow": ("tensorflow",), "jax": ("jax",), "torch": ("torch",)}
    variant_library = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}  # whose matmul is its ceiling
    adam_epsilon = "sqrt_v"
    sgd_momentum = "step"
    accepts = {"jit_compile": ["auto", True, False], "steps_per_execution": "int"}

    def build(self) -> None:
        if keras.backend.backend() != self.variant:
            raise Unsupported(f"Keras was imported with the {keras.backend.backend()} backend, not {self.variant}")
        self.device_scope = prepare_backend(self.variant, self.device, self.threads)
        keras.utils.set_random_seed(self.seed)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        jit_compile = self.options.get("jit_compile", "auto")
        steps = int(self.options.get("steps_per_execution", default_steps_per_execution(self.variant)))
        with self.device_scope():
            self.net = build_model(self.model)
            self.net.compile(optimizer=keras_optimizer(self.optimizer), loss=loss, jit_compile=jit_compile,
                             steps_per_execution=steps)
            self.evaluator = keras.Model(self.net.inputs, self.net.outputs)  # the same layers and weights
            self.evaluator.compile(loss=loss, metrics=["accuracy"], jit_compile=jit_compile)

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        for name, variable in keras_variables(self.net, self.model).items():
            value = np.asarray(params[name], np.float32)
            if value.shape != self.model.param_shapes[name]:
                raise ValueError(f"{name} has shape {value.shape}, expected {self.model.param_shapes[name]}")
            variable.assign(value.reshape(variable.shape))

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: np.array(keras.ops.convert_to_numpy(variable), np.float32).reshape(self.model.param_shapes[name])
                for name, variable in keras_variables(self.net, self.model).items()}  # copies, never views

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        """Keras feeds the arrays to its backend batch by batch, as every keras.io example does."""
        self.x_train, self.y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.int32)
        self.x_eval, self.y_eval = np.asarray(x_eval, np.float32), np.asarray(y_eval, np.int32)
        self.ordered: tuple[np.ndarray, np.ndarray] | None = None
        if self.variant == "tensorflow":  # fit takes TF tensors as they are; NumPy arrays it converts on every call
            with self.device_scope():
                self.x_train, self.y_train = map(keras.ops.convert_to_tensor, (self.x_train, self.y_train))

    def in_order(self, order: np.ndarray) -> tuple:
        """The training set gathered in the harness's order, into arrays reused every epoch.

        A fresh 188 MB array per epoch (x_train[order]) page-faulted for up to 0.4 s of a 0.9 s
        epoch; np.take into the same buffers takes 0.02 s (mode="clip" writes to out directly;
        the indices are valid, the default mode would copy through a temporary). On TensorFlow the
        set is a tensor already and tf.gather makes the epoch's copy: 0.03 s, where converting a
        NumPy array inside fit cost 0.07-0.19 s per epoch.
        """
        if self.variant == "tensorflow":
            with self.device_scope():
                return keras.ops.take(self.x_train, order, axis=0), keras.ops.take(self.y_train, order, axis=0)
        if self.ordered is None or len(self.ordered[0]) != len(order):
            self.ordered = (np.empty((len(order), *self.x_train.shape[1:]), np.float32), np.empty(len(order), np.int32))
        x, y = self.ordered
        np.take(self.x_train, order, axis=0, out=x, mode="clip")
        np.take(self.y_train, order, axis=0, out=y, mode="clip")
        return x, y

    def train_epoch(self, batches: np.ndarray) -> float:
        x, y = self.in_order(batches.reshape(-1))
        with self.device_scope():
            history = self.net.fit(x, y, batch_size=batches.shape[1], epochs=1, shuffle=False, verbose=0)
        return float(history.history["loss"][-1])  # the mean of the epoch's batch losses

    def evaluate(self) -> tuple[float, float]:
        with self.device_scope():
            scores = self.evaluator.evaluate(self.x_eval, self.y_eval, batch_size=self.eval_batch_size, verbose=0,
                                             return_dict=True)
        return float(scores["loss"]), float(scores["accuracy"])

    @property
    def backend(self) -> str:
        compiled = "xla" if self.variant != "torch" else "torch.compile"
        how = compiled if self.net.jit_compile else "no jit"  # "auto" resolved by Keras
        steps = self.net.steps_per_execution
        fed = ", batches copied from the host" if self.data_on_host else ""
        return f"{self.variant} ({how}, {steps} step{'s' if steps > 1 else ''}/call{fed})"

    @property
    def data_on_host(self) -> bool:
        """fit's data adapter hands each batch over from the host, even from arrays already on the GPU."""
        return self.device == "gpu"

    @property
    def steps_in_python(self) -> bool:
        return False  # fit runs the epoch's steps itself

    def peak_device_memory_mb(self) -> float | None:
        """The backend allocator's peak of memory in use on the GPU (each framework's own measure)."""
        return self._gpu_memory(peak=True)

    def device_memory_in_use_mb(self) -> float | None:
        return self._gpu_memory(peak=False)

    def _gpu_memory(self, peak: bool) -> float | None:
        if self.device != "gpu":
            return None
        if self.variant == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak" if peak else "current"] / 2**20
        if self.variant == "jax":
            import jax

            return jax.devices("gpu")[0].memory_stats()["peak_bytes_in_use" if peak else "bytes_in_use"] / 2**20
        import torch

        return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / 2**20

    def thread_pools(self) -> str:
        if self.variant == "tensorflow":
            import tensorflow as tf

            threading = tf.config.threading
            return (f"tensorflow intra-op x{threading.get_intra_op_parallelism_threads()}, "
                    f"inter-op x{threading.get_inter_op_parallelism_threads()}")
        if self.variant == "torch":
            import torch

            return f"torch intra-op x{torch.get_num_threads()}, inter-op x{torch.get_num_interop_threads()}"
        return hidden_pool("xla-cpu", self.threads)
