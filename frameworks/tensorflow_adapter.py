"""Native TensorFlow: a tf.Module, tf.GradientTape and a tf.function step, with the optimizer written out.

An adapter is one file in frameworks/, named <name>_adapter.py, holding one class (the guide,
docs/adding-an-adapter.md, has a complete minimal one):
  1. Declarations, as plain literals (the registry reads them without importing this file,
     so `bench.py list` stays instant): the name, the pip extra that installs the framework,
     the modules it needs, its variants (each becomes its own results row), models, devices.
  2. build() sets the threads and seeds and builds the model from the ModelSpec
     (harness/models/) and the optimizer from the OptimizerSpec; it raises DeviceUnavailable
     or Unsupported when it can't run.
  3. set_params / get_params translate the canonical parameters (names like "conv1.kernel";
     HWIO conv kernels, (in, out) dense kernels, NHWC flatten order) to and from the framework.
  4. load_data moves the whole dataset to the device, once.
  5. train_epoch trains on the batches of indices the harness chose, in order, and blocks
     until done; eval_chunk returns one chunk's summed loss and correct count.
Then `python bench.py parity --frameworks <name>` and `pytest tests/test_conformance.py -k
<name>` tell whether it is right.

Here: a tf.Module holding tf.Variables, the forward pass in tf.nn ops, tf.GradientTape, and the
optimizer update written with TF ops, all in one tf.function train step. Variants: `function`
(TensorFlow's graph executor) and `xla` (the same step compiled with jit_compile=True).
The models: the MLP and CNN from tf.nn layers; the LSTM's step written out and folded over the
rows by tf.foldl; the ViT's patches as a stride-7 tf.nn.conv2d, attention from tf.linalg.matmul
and tf.nn.softmax, layer norm from tf.nn.moments, tf.nn.gelu(approximate=False).
TensorFlow is NHWC/HWIO and (in, out) already, and the ops read the canonical tensors as they are
(the LSTM's fused gate columns, attention's heads side by side), so no layout conversion is needed.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod

import numpy as np
import tensorflow as tf

from harness.adapter import Adapter, DeviceUnavailable
from harness.models import ModelSpec, OptimizerSpec
from harness.models.operations import FIRST_TRANSPOSED, SECOND_TRANSPOSED
from harness.models.recurrent import FEATURES, STEPS


class Model(tf.Module, ABC):
    """The ModelSpec's parameters as variables named after the canonical ones, and the dropout before the classifier."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        super().__init__()
        self.spec = spec
        self.params = {name: tf.Variable(tf.zeros(shape), name=name) for name, shape in spec.param_shapes.items()}
        self.dropout_seed = tf.Variable([seed, 0], dtype=tf.int64, trainable=False)  # advanced every call

    def dropout(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        if not (training and self.spec.dropout > 0):
            return x
        self.dropout_seed.assign_add([0, 1])
        # Philox, named: the default lets XLA:CPU pick ThreeFry, which made the xla MLP 6x slower here.
        return tf.nn.experimental.stateless_dropout(x, self.spec.dropout, seed=self.dropout_seed, rng_alg="philox")

    @abstractmethod
    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """Each model's forward pass: logits of the batch."""


class FeedForward(Model):
    """mlp and cnn: [conv -> ReLU -> max pool]..., flatten (NHWC: the canonical order), dense ReLU..., dense 10."""

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        p = self.params
        for i in range(len(self.spec.channels) if self.spec.name == "cnn" else 0):
            x = tf.nn.relu(tf.nn.conv2d(x, p[f"conv{i}.kernel"], strides=1, padding="VALID") + p[f"conv{i}.bias"])
            x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        dense = [name[: -len(".kernel")] for name in p if name.startswith("dense") and name.endswith(".kernel")]
        for name in dense[:-1]:
            x = tf.nn.relu(x @ p[f"{name}.kernel"] + p[f"{name}.bias"])
        return self.dropout(x, training) @ p[f"{dense[-1]}.kernel"] + p[f"{dense[-1]}.bias"]


class Lstm(Model):
    """rnn: the 28 rows as 28 LSTM steps, the last hidden state -> dropout -> dense 10.

    TensorFlow's core has no LSTM layer (it is Keras's); its fused op, tf.raw_ops.BlockLSTM, has its own gate
    order (i, c, f, o), a forget-bias constant and no XLA kernel. So the step is written out, as the spec
    states it, with one fused (N, 4H) gate product per step, and tf.foldl folds it over the rows: a while
    loop, with gradients, that the graph executor and XLA both run.
    """

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        p, hidden = self.params, self.spec.hidden
        rows = tf.transpose(tf.reshape(x, [-1, STEPS, FEATURES]), [1, 0, 2])  # time first: (28, N, 28)
        projected = dense(rows, p["lstm.kernel"], p["lstm.bias"])  # every step's input projection at once

        def step(state: tuple[tf.Tensor, tf.Tensor], z_input: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            h, c = state
            i, f, g, o = tf.split(z_input + h @ p["lstm.recurrent_kernel"], 4, axis=1)  # the canonical gate order
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        zeros = tf.zeros([tf.shape(x)[0], hidden])
        h, _ = tf.foldl(step, projected, initializer=(zeros, zeros))
        return self.dropout(h, training) @ p["classifier.kernel"] + p["classifier.bias"]


class VisionTransformer(Model):
    """vit: patches by a stride-p convolution (the canonical HWIO kernel; its output grid flattened row-major is the
    token order) -> [class token; patches] + positions -> pre-norm encoder blocks -> layer norm of the class token
    -> dropout -> dense 10."""

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        p, spec = self.params, self.spec
        batch = tf.shape(x)[0]
        patches = tf.nn.conv2d(x, p["patch.kernel"], strides=spec.patch, padding="VALID") + p["patch.bias"]
        class_tokens = tf.broadcast_to(p["embedding.class_token"], [batch, 1, spec.width])
        tokens = tf.concat([class_tokens, tf.reshape(patches, [batch, spec.patches, spec.width])], axis=1)
        tokens = tokens + p["embedding.position"]
        for b in range(spec.depth):
            tokens = self.block(tokens, f"block{b}.")
        head = layer_norm(tokens[:, 0], p["norm.scale"], p["norm.bias"], spec.epsilon)
        return self.dropout(head, training) @ p["classifier.kernel"] + p["classifier.bias"]

    def block(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        """x + attention(LN1(x)), then + mlp1(GELU(mlp0(LN2(x)))), GELU exact (erf)."""
        p, epsilon = self.params, self.spec.epsilon
        x = x + self.attention(layer_norm(x, p[f"{prefix}norm1.scale"], p[f"{prefix}norm1.bias"], epsilon), prefix)
        normed = layer_norm(x, p[f"{prefix}norm2.scale"], p[f"{prefix}norm2.bias"], epsilon)
        hidden = tf.nn.gelu(dense(normed, p[f"{prefix}mlp0.kernel"], p[f"{prefix}mlp0.bias"]), approximate=False)
        return x + dense(hidden, p[f"{prefix}mlp1.kernel"], p[f"{prefix}mlp1.bias"])

    def attention(self, x: tf.Tensor, prefix: str) -> tf.Tensor:
        """Multi-head self-attention without biases: q, k and v as one product of the three kernels side by side,
        softmax(q k^T / sqrt(d)) v per sample and head, the heads side by side (in order) -> the output kernel."""
        p, heads, d = self.params, self.spec.heads, self.spec.head_width
        kernels = tf.concat([p[f"{prefix}{name}.kernel"] for name in ("query", "key", "value")], axis=1)
        qkv = tf.reshape(dense(x, kernels), [tf.shape(x)[0], -1, 3, heads, d])
        q, k, v = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4]))  # each (N, heads, T, d): head h's d columns
        weights = tf.nn.softmax(tf.linalg.matmul(q, k, transpose_b=True) / math.sqrt(d))  # over the keys
        mixed = tf.transpose(tf.linalg.matmul(weights, v), [0, 2, 1, 3])  # (N, T, heads, d)
        return dense(tf.reshape(mixed, tf.shape(x)), p[f"{prefix}out.kernel"])


def dense(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None) -> tf.Tensor:
    """x @ kernel (+ bias) over the last axis of a batch of sequences, as one (N*T, in) @ (in, out) product."""
    rows = tf.reshape(x, [-1, kernel.shape[0]]) @ kernel
    rows = rows if bias is None else rows + bias
    return tf.reshape(rows, tf.concat([tf.shape(x)[:-1], [kernel.shape[1]]], axis=0))


def layer_norm(x: tf.Tensor, scale: tf.Tensor, bias: tf.Tensor, epsilon: float) -> tf.Tensor:
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the features (var biased)."""
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.nn.batch_normalization(x, mean, variance, offset=bias, scale=scale, variance_epsilon=epsilon)


MODELS = {"mlp": FeedForward, "cnn": FeedForward, "rnn": Lstm, "vit": VisionTransformer}


class Optimizer(tf.Module):
    """OptimizerSpec's update rules (sgd with momentum/nesterov, adam, adamw) as TF ops on the variables."""

    def __init__(self, spec: OptimizerSpec, variables: list[tf.Variable]) -> None:
        super().__init__()
        self.spec = spec
        self.step = tf.Variable(0.0, trainable=False)
        self.slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]

    def rate(self, step: tf.Tensor) -> tf.Tensor | float:
        """OptimizerSpec.lr_at in TF ops: the epoch's stair, or the warm-up and cosine decay of this step."""
        s = self.spec
        if s.per_step:
            warmup, total = float(s.warmup_steps), float(s.schedule_steps)
            warming = s.lr * (s.lr_start + (1 - s.lr_start) * step / max(warmup, 1.0))
            progress = tf.minimum(step - warmup, total - warmup) / max(total - warmup, 1.0)
            decaying = s.lr * (s.lr_end + (1 - s.lr_end) * (1 + tf.cos(np.pi * progress)) / 2)
            return tf.where(step < warmup, warming, decaying)
        return s.lr * s.lr_decay ** tf.floor(step / s.steps_per_epoch) if s.decays else s.lr

    def apply(self, grads: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        s = self.spec
        lr = self.rate(self.step)
        self.step.assign_add(1.0)
        for g, p, (m, v) in zip(grads, variables, self.slots):
            if s.name == "sgd":
                if s.momentum:
                    m.assign(s.momentum * m + g)  # v <- momentum v + g
                    g = g + s.momentum * m if s.nesterov else m
                p.assign_sub(lr * g)
                continue
            b1, b2 = s.betas
            if s.name == "adamw":
                p.assign_sub(lr * s.weight_decay * p)  # decoupled weight decay
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * tf.square(g))
            m_hat, v_hat = m / (1 - b1**self.step), v / (1 - b2**self.step)
            p.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + s.eps))


class TensorflowAdapter(Adapter):
    """tf.Module + tf.GradientTape + a tf.function train step (`xla`: compiled with jit_compile=True), for the
    MLP, the CNN, the LSTM and the ViT.

    Dropout (before the last dense layer) uses stateless_dropout with a seed counter that starts
    at the cell's seed, so a seed fixes every mask.
    """

    name = "tensorflow"
    extra = "tensorflow"
    modules = ("tensorflow",)
    variants = ("function", "xla")
    devices = ("cpu", "gpu")
    models = ("mlp", "cnn", "rnn", "vit")

    def build(self) -> None:
        self.tf_device = self._device(self.device, self.threads)
        with tf.device(self.tf_device):
            self.net = MODELS[self.model.name](self.model, self.seed)
            self.variables = list(self.net.params.values())
            self.optimizer_state = Optimizer(self.optimizer, self.variables)
        compile_with_xla = self.variant == "xla"
        self.train_step = tf.function(self._train_step, jit_compile=compile_with_xla)
        self.eval_step = tf.function(self._eval_step, jit_compile=compile_with_xla)

    @staticmethod
    def _device(device: str, threads: int) -> str:
        try:  # possible only before TensorFlow's runtime starts; the harness's TF_NUM_* variables hold otherwise
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass
        tf.config.experimental.enable_tensor_float_32_execution(False)  # full float32 products on GPUs
        if device == "gpu" and not tf.config.list_physical_devices("GPU"):
            raise DeviceUnavailable("TensorFlow sees no GPU here (tensorflow-cpu, or no CUDA): pip install tensorflow")
        return "/GPU:0" if device == "gpu" else "/CPU:0"

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        for name, variable in self.net.params.items():
            value = np.asarray(params[name], np.float32)
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{name} has shape {value.shape}, expected {tuple(variable.shape)}")
            variable.assign(value)

    def get_params(self) -> dict[str, np.ndarray]:
        return {name: variable.numpy() for name, variable in self.net.params.items()}

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        with tf.device(self.tf_device):
            self.x_train, self.y_train = tf.constant(x_train, tf.float32), tf.constant(y_train, tf.int32)
            self.x_eval, self.y_eval = tf.constant(x_eval, tf.float32), tf.constant(y_eval, tf.int32)

    def _train_step(self, indices: tf.Tensor) -> tf.Tensor:
        x, y = tf.gather(self.x_train, indices), tf.gather(self.y_train, indices)
        with tf.GradientTape() as tape:
            logits = self.net(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        self.optimizer_state.apply(tape.gradient(loss, self.variables), self.variables)
        return loss

    def _eval_step(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = self.net(x, training=False)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))
        return loss, correct

    def train_epoch(self, batches: np.ndarray) -> float:
        with tf.device(self.tf_device):
            losses = []
            for indices in tf.constant(batches, tf.int32):
                losses.append(self.train_step(indices))
                if self.sync_each_step:  # only the GPU check's contrast run: a read-back every step
                    float(losses[-1])
            return float(tf.reduce_mean(tf.stack(losses)))  # reading the value waits for every step

    def eval_chunk(self, rows: slice):
        with tf.device(self.tf_device):
            return self.eval_step(self.x_eval[rows], self.y_eval[rows])

    def thread_pools(self) -> str:
        threading = tf.config.threading
        return (f"tensorflow intra-op x{threading.get_intra_op_parallelism_threads()}, "
                f"inter-op x{threading.get_inter_op_parallelism_threads()}")

    @property
    def backend(self) -> str:
        return f"{'xla' if self.variant == 'xla' else 'tf-graph'} ({self.tf_device.strip('/').lower()})"

    def peak_device_memory_mb(self) -> float | None:
        """The GPU allocator's peak of memory in use, as PyTorch, JAX and CuPy report it."""
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20 if self.device == "gpu" else None

    def device_memory_in_use_mb(self) -> float | None:
        return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20 if self.device == "gpu" else None

    @staticmethod
    def matmul_probe(device: str, size: int, threads: int):
        """One float32 tf.matmul, eager (a single op: the graph executor would add nothing to it)."""
        name = TensorflowAdapter._device(device, threads)
        with tf.device(name):
            a, b = tf.random.uniform((size, size), seed=1), tf.random.uniform((size, size), seed=2)

        def product() -> None:
            with tf.device(name):
                tf.linalg.matmul(a, b)[0, 0].numpy()  # reading one element waits for the product

        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
        return product, f"tensorflow {tf.__version__} ({'onednn' if onednn else 'eigen'})"

    @staticmethod
    def op_probe(device: str, operation: dict, threads: int):
        """One step operation as one eager op, as for the product (a tf.function call would add a quarter of a
        millisecond of its own): tf.linalg.matmul with the transposition as a flag; the convolution and its
        gradients as the ops GradientTape emits for it."""
        from harness.execute.probes import operands

        name = TensorflowAdapter._device(device, threads)
        with tf.device(name):
            given = {key: tf.constant(value) for key, value in operands(operation).items()}
        shapes = {key: tf.constant(value.shape.as_list()) for key, value in given.items()}
        role, strides = operation["role"], [1, 1, 1, 1]
        if operation["kind"] in ("matmul", "bmm"):  # bmm: attention's products, one per sample and head
            def work():
                return tf.linalg.matmul(given["a"], given["b"], transpose_a=role in FIRST_TRANSPOSED,
                                        transpose_b=role in SECOND_TRANSPOSED)
        elif role == "forward":
            def work():
                return tf.nn.conv2d(given["x"], given["w"], 1, "VALID")
        elif role == "weight gradient":
            def work():
                return tf.raw_ops.Conv2DBackpropFilter(input=given["x"], filter_sizes=shapes["w"],
                                                       out_backprop=given["dy"], strides=strides, padding="VALID")
        else:
            def work():
                return tf.raw_ops.Conv2DBackpropInput(input_sizes=shapes["x"], filter=given["w"],
                                                      out_backprop=given["dy"], strides=strides, padding="VALID")

        def run():
            with tf.device(name):
                result = work()
                if device == "gpu":
                    tf.reshape(result, [-1])[0].numpy()  # reading one element waits for the GPU
            return result

        return run

    @staticmethod
    def matmul_on_device(device: str, a: np.ndarray, b: np.ndarray):
        name = TensorflowAdapter._device(device, int(os.environ.get("TF_NUM_INTRAOP_THREADS", "1")))
        with tf.device(name):
            product = tf.linalg.matmul(tf.constant(a), tf.constant(b)).numpy()
        facts = {"precision_set": "tensor_float_32_execution="
                                  f"{tf.config.experimental.tensor_float_32_execution_enabled()}"}
        if device == "gpu":
            build = tf.sysconfig.get_build_info()
            facts.update(cuda=build.get("cuda_version"), cudnn=build.get("cudnn_version"))
        return product, facts
