"""ModelSpec: what every model's description gives every adapter, and the rules all models share.

A spec fixes a network's architecture, its canonical parameter names and layout, its initial weights
(drawn here with numpy, seeded) and the work of a training step; adapters translate it into their
framework and never invent any of these themselves. Each kind of network is a subclass in its own
file (feedforward.py: mlp and cnn; recurrent.py: rnn; transformer.py: vit); ModelSpec(name, ...)
builds the one that name belongs to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.models.operations import Operation

IMAGE_SHAPE = (28, 28, 1)
CLASSES = 10


@dataclass(frozen=True)
class ModelSpec(ABC):
    """A model by name and sizes: ModelSpec("mlp", hidden=(64,)) is the feedforward spec of that MLP.

    Every spec has a dropout rate (inverted dropout right before its last dense layer, off in evaluation)
    and gives param_shapes (canonical name -> shape, in forward order), init_params(seed),
    step_operations(batch) and a label for its op floor; the rest follows from those here.
    """

    name: str
    dropout: float = 0.2
    kinds: ClassVar[dict[str, type[ModelSpec]]] = {}  # model name -> the subclass that describes it

    def __init_subclass__(cls, names: tuple[str, ...] = (), **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        ModelSpec.kinds.update(dict.fromkeys(names, cls))

    def __new__(cls, name: str | None = None, *args, **kwargs):
        if cls is ModelSpec:
            if name not in ModelSpec.kinds:
                known = ", ".join(map(repr, ModelSpec.kinds))
                raise ValueError(f"unknown model {name!r}: use {known}")
            cls = ModelSpec.kinds[name]
        return super().__new__(cls)

    @property
    @abstractmethod
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical name -> shape, in forward order."""

    @abstractmethod
    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """The initial weights, float32, in param_shapes' order: the same for every framework."""

    @abstractmethod
    def step_operations(self, batch: int) -> list[Operation]:
        """The heavy operations of one training step at this batch size, in the order a step runs them.

        The work flops_per_sample counts; the op floor (harness/execute/ceilings.py) times each alone in
        every library and sums the fastest.
        """

    @property
    @abstractmethod
    def label(self) -> str:
        """The sizes that decide a step's work, for the op floor's name (floor_key)."""

    @property
    def param_count(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes.values())

    @property
    def flops_per_sample(self) -> int:
        """Training FLOPs per sample: the work a training step does, 2 FLOPs per multiply-accumulate.

        Forward products, the weight gradient of every layer (as many MACs as its forward pass), and
        the input gradient of every layer but the first: no framework computes the gradient with
        respect to the images. A product of two activations (attention's) has no weight gradient and an
        input gradient for each operand. Elementwise work (activations, pooling, normalisation, dropout,
        the optimizer) is not counted; it is what separates a row from the products' own speed.
        It is the sum of one sample's step operations, so the op floor and the count cannot disagree.
        """
        return sum(operation.flops for operation in self.step_operations(1))


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)); a convolution's fans count its receptive field."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def dense_operations(prefix: str, batch: int, fan_in: int, fan_out: int,
                     first: bool = False) -> tuple[Operation, list[Operation]]:
    """A dense product's forward operation, and its backward ones in the order a step runs them: the weight
    gradient (x^T dy), and the input gradient (dy W^T) unless the layer reads the images."""
    forward = Operation(f"{prefix} forward", "matmul", "forward", (batch, fan_in, fan_out))
    backward = [Operation(f"{prefix} weight gradient", "matmul", "weight gradient", (fan_in, batch, fan_out))]
    if not first:
        backward.append(Operation(f"{prefix} input gradient", "matmul", "input gradient", (batch, fan_out, fan_in)))
    return forward, backward
