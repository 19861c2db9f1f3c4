"""The LSTM: an image read as a sequence, its 28 rows as 28 steps of 28 features.

    rows x_1..x_28 (28 features each) -> LSTM(hidden) -> h_28 -> dropout -> dense 10

One step, with the four gates in the canonical order i, f, g, o (input, forget, cell candidate,
output), z the (N, 4H) pre-activations and σ the logistic sigmoid:

    z_t = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias
    i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o)          z split into four blocks of H columns
    c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t),        h_0 = c_0 = 0

Canonical parameters, in this order:

    lstm.kernel            (28, 4H)  the input projection; columns [k*H, (k+1)*H) are gate k of i, f, g, o
    lstm.recurrent_kernel  (H, 4H)   the recurrent projection, the same column blocks
    lstm.bias              (4H,)     ONE bias per gate unit (a framework with two, PyTorch's and cuDNN's
                                     b_ih + b_hh, holds it in one and zeros, untrained, in the other)
    classifier.kernel      (H, 10),  classifier.bias (10,)

This is Keras's fused layout (kernel, recurrent_kernel, bias) with its gate order, and PyTorch's
order too (weight_ih_l0 = kernel^T, weight_hh_l0 = recurrent_kernel^T).

Initialisation (Keras's LSTM defaults): the kernel Glorot-uniform over its whole (28, 4H) shape;
the recurrent kernel orthogonal over its whole (H, 4H) shape (orthonormal rows: the Q of the QR
decomposition of a standard-normal (4H, H) matrix, signs fixed by R's diagonal, transposed); the bias
0 but 1 for the forget gate (Jozefowicz et al. 2015: remember by default); the classifier Glorot-uniform
with a zero bias. The draws come from default_rng(seed) in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.models.operations import Operation
from harness.models.spec import CLASSES, IMAGE_SHAPE, ModelSpec, dense_operations, glorot_uniform

GATES = ("i", "f", "g", "o")  # the canonical order of the four blocks of 4H
STEPS, FEATURES = IMAGE_SHAPE[0], IMAGE_SHAPE[1]  # a row per step, a pixel per feature


def orthogonal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A (rows, cols) matrix with orthonormal rows (rows <= cols) or columns, as Keras's Orthogonal draws it."""
    rows, cols = shape
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q *= np.sign(np.diag(r))  # a unique Q: the decomposition's sign choice would otherwise bias it
    return (q.T if rows < cols else q).astype(np.float32)


@dataclass(frozen=True)
class RecurrentSpec(ModelSpec, names=("rnn",)):
    """rnn: an LSTM of `hidden` units over the 28 rows, the last hidden state -> dropout -> dense 10."""

    dropout: float = 0.1
    hidden: int = 128

    def __post_init__(self) -> None:
        if not (isinstance(self.hidden, int) and self.hidden > 0):
            raise ValueError(f"hidden = {self.hidden!r} must be a positive number of LSTM units")

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        gates = len(GATES) * self.hidden
        return {"lstm.kernel": (FEATURES, gates), "lstm.recurrent_kernel": (self.hidden, gates),
                "lstm.bias": (gates,), "classifier.kernel": (self.hidden, CLASSES), "classifier.bias": (CLASSES,)}

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        rng, shapes, h = np.random.default_rng(seed), self.param_shapes, self.hidden
        bias = np.zeros(shapes["lstm.bias"], np.float32)
        bias[GATES.index("f") * h:(GATES.index("f") + 1) * h] = 1.0
        return {"lstm.kernel": glorot_uniform(rng, shapes["lstm.kernel"]),
                "lstm.recurrent_kernel": orthogonal(rng, shapes["lstm.recurrent_kernel"]),
                "lstm.bias": bias,
                "classifier.kernel": glorot_uniform(rng, shapes["classifier.kernel"]),
                "classifier.bias": np.zeros(CLASSES, np.float32)}

    def step_operations(self, batch: int) -> list[Operation]:
        """The input projection of every step as one product (all rows are known at once) and no input
        gradient (the images'); the recurrent product once per step, forward, and its input gradient once per
        step but the first (h_0 is a constant); its weight gradient as one product over every step's h_{t-1};
        then the classifier."""
        h, gates, rows = self.hidden, len(GATES) * self.hidden, STEPS * batch
        project = [Operation("lstm input forward", "matmul", "forward", (rows, FEATURES, gates))]
        recur = [Operation("lstm recurrent forward", "matmul", "forward", (batch, h, gates), STEPS)]
        classify, classify_backward = dense_operations("classifier", batch, h, CLASSES)
        backward = [Operation("lstm recurrent input gradient", "matmul", "input gradient", (batch, gates, h),
                              STEPS - 1),
                    Operation("lstm recurrent weight gradient", "matmul", "weight gradient", (h, rows, gates)),
                    Operation("lstm input weight gradient", "matmul", "weight gradient", (FEATURES, rows, gates))]
        return project + recur + [classify] + classify_backward + backward

    @property
    def label(self) -> str:
        """e.g. "28x28-128-10": steps x features, hidden units, classes."""
        return f"{STEPS}x{FEATURES}-{self.hidden}-{CLASSES}"
