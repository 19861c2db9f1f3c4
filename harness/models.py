"""The two models, described once, so that every framework builds the same network.

A ModelSpec fixes the architecture, the canonical parameter names and layout, and
the initial weights (drawn here with numpy, seeded); adapters translate it into
their framework and never invent any of these themselves.

Canonical layout: images NHWC, conv kernels HWIO, dense kernels (in, out), and the
CNN flattens its feature maps in NHWC (row-major H, W, C) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
CLASSES = 10


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("epoch_decay", "warmup_cosine")


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer settings every adapter maps exactly onto its framework's optimizer.

    sgd:   v <- momentum * v + g;  p <- p - lr * v   (nesterov: p <- p - lr * (g + momentum * v))
    adam:  PyTorch/Optax form, eps added outside the square root of the bias-corrected v.
    adamw: adam plus decoupled weight decay p <- p - lr * weight_decay * p.
    The learning rate of step t (0-based) follows the schedule:
    epoch_decay:   lr * lr_decay ** (t // steps_per_epoch), a staircase exponential decay by lr_decay after
                   every epoch (1.0 keeps it constant);
    warmup_cosine: per step, a linear warm-up from lr * lr_start to lr over the first W = round(warmup * T)
                   steps, then a cosine decay to lr * lr_end at step T = total_steps (and lr * lr_end after):
                   lr * (lr_end + (1 - lr_end) * (1 + cos(pi * (t - W) / (T - W))) / 2). It is optax's
                   warmup_cosine_decay_schedule and Keras's CosineDecay with warm-up, written once.
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    schedule: str = "epoch_decay"
    warmup: float = 0.0  # warmup_cosine: the share of the steps spent warming up
    lr_start: float = 0.0  # warmup_cosine: the first step's rate, as a fraction of lr
    lr_end: float = 0.0  # warmup_cosine: the last step's rate, as a fraction of lr
    steps_per_epoch: int = 0  # set by the worker from the training set and batch size
    total_steps: int = 0  # set by the worker: the cell's epochs times steps_per_epoch

    def __post_init__(self) -> None:
        """Settings no framework could map: refused here, once, for every adapter."""
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}: use {', '.join(OPTIMIZERS)}")
        if self.weight_decay and self.name != "adamw":
            raise ValueError(f"weight_decay is defined only for adamw (decoupled), not for {self.name}")
        if self.nesterov and not (self.name == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs sgd with a momentum above 0")
        if self.name != "sgd" and self.momentum:
            raise ValueError(f"momentum is an sgd setting; {self.name} has betas")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use {', '.join(SCHEDULES)}")
        if self.schedule == "warmup_cosine" and self.lr_decay != 1.0:
            raise ValueError("lr_decay is the epoch_decay schedule's factor; warmup_cosine sets its own rates")
        if self.schedule == "epoch_decay" and (self.warmup or self.lr_start or self.lr_end):
            raise ValueError("warmup, lr_start and lr_end shape the warmup_cosine schedule: set schedule = "
                             "'warmup_cosine' to use them")

    @property
    def per_step(self) -> bool:
        """Whether the rate changes from step to step (warmup_cosine), not only between epochs."""
        return self.schedule == "warmup_cosine" and self.total_steps > 0

    @property
    def decays(self) -> bool:
        """Whether the rate changes at all during training."""
        return self.per_step or (self.lr_decay != 1.0 and self.steps_per_epoch > 0)

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup * self.total_steps)

    def form(self, adam_epsilon: str, sgd_momentum: str) -> str:
        """The form an adapter computes this optimizer in (its declarations), as runs.csv shows it."""
        if self.name in ("adam", "adamw"):
            where = "sqrt(v_hat)" if adam_epsilon == "sqrt_v_hat" else "sqrt(v), corrections in the rate"
            return f"eps added to {where}"
        if not self.momentum:
            return "plain"
        return f"momentum buffer of {'gradients' if sgd_momentum == 'gradient' else 'rate-scaled steps'}"

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based count of the updates before it)."""
        if self.per_step:
            warmup, total = self.warmup_steps, self.total_steps
            if step < warmup:
                return self.lr * (self.lr_start + (1 - self.lr_start) * step / warmup)
            progress = min(step - warmup, total - warmup) / max(total - warmup, 1)
            return self.lr * (self.lr_end + (1 - self.lr_end) * (1 + math.cos(math.pi * progress)) / 2)
        return self.lr * self.lr_decay ** (step // self.steps_per_epoch) if self.decays else self.lr


@dataclass(frozen=True)
class ModelSpec:
    """MLP: 784 -> hidden... (ReLU) -> dropout -> 10.

    CNN: conv3x3(c0) ReLU maxpool2 -> conv3x3(c1) ReLU maxpool2 -> flatten -> dense(dense) ReLU
    -> dropout -> dense 10, convolutions 'valid' with stride 1, pools 2x2 stride 2 (floor),
    as in keras.io's mnist_convnet.
    """

    name: str
    hidden: tuple[int, ...] = (512, 512)
    channels: tuple[int, ...] = (32, 64)
    dense: int = 128
    dropout: float = 0.2
    kernel_size: tuple[int, ...] = (3,)  # one per convolution, or one for all
    layers: tuple[tuple[str, tuple[int, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name not in ("mlp", "cnn"):
            raise ValueError(f"unknown model {self.name!r}: use 'mlp' or 'cnn'")
        if isinstance(self.kernel_size, int):
            object.__setattr__(self, "kernel_size", (self.kernel_size,))
        if len(self.kernel_size) not in (1, len(self.channels)):
            raise ValueError(f"kernel_size lists {len(self.kernel_size)} sizes for {len(self.channels)} convolutions: "
                             "give one for all or one per convolution")
        object.__setattr__(self, "layers", tuple(self._layers()))
        side, conv_sides = self.feature_map_side(len(self.channels))
        if self.name == "cnn" and min([side, *conv_sides]) < 1:
            raise ValueError(f"the convolutions {self.channels} with kernels {self.kernel_sizes} leave no pixel of a "
                             "28x28 image: use fewer or smaller ones")

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        """The side of each convolution's kernel, in forward order."""
        return self.kernel_size * len(self.channels) if len(self.kernel_size) == 1 else self.kernel_size

    def _layers(self):
        """(parameter prefix, kernel shape) per trainable layer, in forward order."""
        if self.name == "mlp":
            sizes = [int(np.prod(IMAGE_SHAPE)), *self.hidden, CLASSES]
            for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
                yield f"dense{i}", (fan_in, fan_out)
            return
        in_channels = IMAGE_SHAPE[2]
        for i, (out_channels, k) in enumerate(zip(self.channels, self.kernel_sizes)):
            yield f"conv{i}", (k, k, in_channels, out_channels)
            in_channels = out_channels
        side, _ = self.feature_map_side(len(self.channels))
        yield "dense0", (side * side * in_channels, self.dense)
        yield "dense1", (self.dense, CLASSES)

    def feature_map_side(self, n_blocks: int) -> tuple[int, list[int]]:
        """Spatial side after n conv+pool blocks, and the conv output side of each block."""
        side, conv_sides = IMAGE_SHAPE[0], []
        for k in self.kernel_sizes[:n_blocks]:
            side = side - k + 1
            conv_sides.append(side)
            side //= 2
        return side, conv_sides

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical name -> shape, in forward order (kernel then bias per layer)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for prefix, kernel in self.layers:
            shapes[f"{prefix}.kernel"] = kernel
            shapes[f"{prefix}.bias"] = (kernel[-1],)
        return shapes

    @property
    def param_count(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes.values())

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Glorot-uniform kernels and zero biases, float32, the same for every framework."""
        rng = np.random.default_rng(seed)
        params = {}
        for prefix, shape in self.layers:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            params[f"{prefix}.kernel"] = rng.uniform(-limit, limit, shape).astype(np.float32)
            params[f"{prefix}.bias"] = np.zeros(shape[-1], np.float32)
        return params

    @property
    def layer_macs(self) -> list[int]:
        """Multiply-accumulates of each weighted layer's forward pass for one sample, in forward order."""
        _, conv_sides = self.feature_map_side(len(self.channels))
        sides = conv_sides if self.name == "cnn" else []
        return [(sides[i] ** 2 if i < len(sides) else 1) * int(np.prod(shape))
                for i, (_, shape) in enumerate(self.layers)]

    @property
    def forward_macs(self) -> int:
        return sum(self.layer_macs)

    @property
    def flops_per_sample(self) -> int:
        """Training FLOPs per sample: the work a training step does, 2 FLOPs per multiply-accumulate.

        Forward products, the weight gradient of every layer (as many MACs as its forward pass), and
        the input gradient of every layer but the first: no framework computes the gradient with
        respect to the images. Elementwise work (activations, pooling, dropout, the optimizer) is not
        counted; it is what separates a row from the products' own speed.
        """
        first, *rest = self.layer_macs
        return 2 * (2 * first + 3 * sum(rest))


    def step_operations(self, batch: int) -> list[Operation]:
        """The heavy operations of one training step at this batch size, in the order a step runs them.

        The same work flops_per_sample counts: every layer's forward product, its weight gradient, and
        the input gradient of every layer but the first. The op floor (harness/execute/ceilings.py)
        times each alone in every library and sums the fastest.
        """
        forward, backward = [], []
        side, first = IMAGE_SHAPE[0], True
        for prefix, shape in self.layers:
            if prefix.startswith("conv"):
                k, _, c, o = shape
                dims = (batch, side, side, c, o, k)
                kinds = [("conv", "forward", dims), ("conv", "weight gradient", dims)]
                kinds += [] if first else [("conv", "input gradient", dims)]
                side = (side - k + 1) // 2
            else:
                fan_in, fan_out = shape
                kinds = [("matmul", "forward", (batch, fan_in, fan_out)),
                         ("matmul", "weight gradient", (fan_in, batch, fan_out))]
                kinds += [] if first else [("matmul", "input gradient", (batch, fan_out, fan_in))]
            forward.append(Operation(f"{prefix} {kinds[0][1]}", *kinds[0]))
            backward[:0] = [Operation(f"{prefix} {role}", kind, role, dims) for kind, role, dims in kinds[1:]]
            first = False
        return forward + backward


@dataclass(frozen=True)
class Operation:
    """One heavy operation of a training step, as every library's probe runs it alone.

    matmul: C (m, n) = A (m, k) @ B (k, n); the weight gradient's A is the layer input stored (k, m)
      (it computes x^T dy) and the input gradient's B the kernel stored (n, k) (dy W^T), as a step has them.
    conv: a 'valid' stride-1 convolution of an NHWC batch (batch, height, width, in) with an HWIO
      kernel (kernel, kernel, in, out); its weight gradient takes the input and the output's gradient,
      its input gradient the kernel and the output's gradient.
    """

    name: str  # "dense1 weight gradient"
    kind: str  # "matmul" or "conv"
    role: str  # "forward", "weight gradient" or "input gradient"
    dims: tuple[int, ...]  # matmul (m, k, n); conv (batch, height, width, in, out, kernel)

    @property
    def flops(self) -> int:
        if self.kind == "matmul":
            m, k, n = self.dims
            return 2 * m * k * n
        batch, height, width, c, o, k = self.dims
        return 2 * batch * (height - k + 1) * (width - k + 1) * k * k * c * o

    @property
    def shape(self) -> str:
        """The operands as a step holds them, e.g. "784x128 (transposed) @ 128x512"."""
        if self.kind == "matmul":
            m, k, n = self.dims
            a = f"{k}x{m} (transposed)" if self.role == "weight gradient" else f"{m}x{k}"
            b = f"{n}x{k} (transposed)" if self.role == "input gradient" else f"{k}x{n}"
            return f"{a} @ {b}"
        batch, height, width, c, o, k = self.dims
        return f"{batch}x{height}x{width}x{c} * {k}x{k}x{c}x{o}"

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "role": self.role, "dims": list(self.dims),
                "shape": self.shape, "flops": self.flops}


def floor_key(spec: ModelSpec, batch: int) -> str:
    """Names the op floor of a model at a batch size, e.g. "mlp 784-512-512-10 at batch 128"."""
    first = spec.layers[0][1][-2] if spec.name == "mlp" else IMAGE_SHAPE[2]
    sizes = "-".join(str(n) for n in [first] + [shape[-1] for _, shape in spec.layers])
    kernels = " kernels " + "-".join(map(str, spec.kernel_sizes)) if spec.name == "cnn" else ""
    return f"{spec.name} {sizes}{kernels} at batch {batch}"


def model_spec(name: str, **sizes) -> ModelSpec:
    """A ModelSpec from config values (lists become tuples so the spec stays hashable)."""
    return ModelSpec(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})
