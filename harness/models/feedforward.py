"""The MLP and the CNN: a stack of weighted layers, each a kernel and a bias.

Canonical layout: images NHWC, conv kernels HWIO, dense kernels (in, out), and the CNN flattens its
feature maps in NHWC (row-major H, W, C) order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.models.operations import Operation
from harness.models.spec import CLASSES, IMAGE_SHAPE, ModelSpec, dense_operations, glorot_uniform


@dataclass(frozen=True)
class FeedForwardSpec(ModelSpec, names=("mlp", "cnn")):
    """MLP: 784 -> hidden... (ReLU) -> dropout -> 10.

    CNN: conv k0xk0 (c0) ReLU maxpool2 -> conv k1xk1 (c1) ReLU maxpool2 -> flatten -> dense(dense) ReLU
    -> dropout -> dense 10, convolutions 'valid' with stride 1 (kernel sizes 3 by default), pools 2x2
    stride 2 (floor), as in keras.io's mnist_convnet.
    """

    hidden: tuple[int, ...] = (512, 512)
    channels: tuple[int, ...] = (32, 64)
    dense: int = 128
    kernel_size: tuple[int, ...] = (3,)  # one per convolution, or one for all
    layers: tuple[tuple[str, tuple[int, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
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

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Glorot-uniform kernels and zero biases, float32, the same for every framework."""
        rng = np.random.default_rng(seed)
        params = {}
        for prefix, shape in self.layers:
            params[f"{prefix}.kernel"] = glorot_uniform(rng, shape)
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

    def step_operations(self, batch: int) -> list[Operation]:
        """Every layer's forward product, then, last layer first, its weight gradient and (but for the first
        layer) its input gradient."""
        forward, backward = [], []
        side, first = IMAGE_SHAPE[0], True
        for prefix, shape in self.layers:
            if prefix.startswith("conv"):
                k, _, c, o = shape
                dims = (batch, side, side, c, o, k)
                roles = ["forward", "weight gradient"] + ([] if first else ["input gradient"])
                ahead, *behind = [Operation(f"{prefix} {role}", "conv", role, dims) for role in roles]
                side = (side - k + 1) // 2
            else:
                ahead, behind = dense_operations(prefix, batch, *shape, first=first)
            forward.append(ahead)
            backward[:0] = behind
            first = False
        return forward + backward

    @property
    def label(self) -> str:
        """"784-512-512-10" (mlp) or "1-32-64-128-10 kernels 3-3" (cnn)."""
        first = self.layers[0][1][-2] if self.name == "mlp" else IMAGE_SHAPE[2]
        sizes = "-".join(str(n) for n in [first] + [shape[-1] for _, shape in self.layers])
        return sizes + (" kernels " + "-".join(map(str, self.kernel_sizes)) if self.name == "cnn" else "")
