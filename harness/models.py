"""The two models, described once, so that every framework builds the same network.

A ModelSpec fixes the architecture, the canonical parameter names and layout, and
the initial weights (drawn here with numpy, seeded); adapters translate it into
their framework and never invent any of these themselves.

Canonical layout: images NHWC, conv kernels HWIO, dense kernels (in, out), and the
CNN flattens its feature maps in NHWC (row-major H, W, C) order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
CLASSES = 10


OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer settings every adapter maps exactly onto its framework's optimizer.

    sgd:   v <- momentum * v + g;  p <- p - lr * v   (nesterov: p <- p - lr * (g + momentum * v))
    adam:  PyTorch/Optax form, eps added outside the square root of the bias-corrected v.
    adamw: adam plus decoupled weight decay p <- p - lr * weight_decay * p.
    The learning rate decays by lr_decay after every epoch of steps_per_epoch steps (a staircase
    exponential decay; 1.0 keeps it constant): step t (0-based) uses lr * lr_decay ** (t // steps_per_epoch).
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    steps_per_epoch: int = 0  # set by the worker from the training set and batch size

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

    @property
    def decays(self) -> bool:
        return self.lr_decay != 1.0 and self.steps_per_epoch > 0

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
    kernel_size: int = 3
    layers: tuple[tuple[str, tuple[int, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name not in ("mlp", "cnn"):
            raise ValueError(f"unknown model {self.name!r}: use 'mlp' or 'cnn'")
        object.__setattr__(self, "layers", tuple(self._layers()))

    def _layers(self):
        """(parameter prefix, kernel shape) per trainable layer, in forward order."""
        if self.name == "mlp":
            sizes = [int(np.prod(IMAGE_SHAPE)), *self.hidden, CLASSES]
            for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
                yield f"dense{i}", (fan_in, fan_out)
            return
        k, in_channels = self.kernel_size, IMAGE_SHAPE[2]
        for i, out_channels in enumerate(self.channels):
            yield f"conv{i}", (k, k, in_channels, out_channels)
            in_channels = out_channels
        side, _ = self.feature_map_side(len(self.channels))
        yield "dense0", (side * side * in_channels, self.dense)
        yield "dense1", (self.dense, CLASSES)

    def feature_map_side(self, n_blocks: int) -> tuple[int, list[int]]:
        """Spatial side after n conv+pool blocks, and the conv output side of each block."""
        side, conv_sides = IMAGE_SHAPE[0], []
        for _ in range(n_blocks):
            side = side - self.kernel_size + 1
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


def model_spec(name: str, **sizes) -> ModelSpec:
    """A ModelSpec from config values (lists become tuples so the spec stays hashable)."""
    return ModelSpec(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})
