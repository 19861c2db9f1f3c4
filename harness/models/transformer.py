"""The Vision Transformer: an image as 16 patches of 7x7 pixels, and a pre-norm Transformer encoder over them.

    patches (P = (28/p)^2 of p*p values) -> dense to the width D -> [class token; patch tokens] + positions
    -> depth x encoder block -> layer norm -> the class token -> dropout -> dense 10

    encoder block (pre-norm, residual):  x <- x + attention(LN1(x));  x <- x + mlp1(GELU(mlp0(LN2(x))))
    attention: q, k, v = a @ W_q, a @ W_k, a @ W_v; per head (its d = D / heads columns)
               softmax(q k^T / sqrt(d)) v, over all T = P + 1 tokens (no mask); the heads' outputs side by
               side (head order) -> @ W_out. No biases in attention: a key bias b_k cannot change any output
               (q . (k_j + b_k) moves every score of a query by the same q . b_k, which the softmax
               removes), so its gradient is exactly 0 and only float32 rounding would move it, which parity
               could not judge; and frameworks leave out the four biases together (PyTorch bias=False,
               Flax and Keras use_bias=False).
    LN(x) = (x - mean) / sqrt(var + 1e-6) * scale + bias over the D features (var biased, no correction);
    GELU(x) = x * (1 + erf(x / sqrt(2))) / 2, the exact form (not the tanh approximation).

Patches: the image cut into a grid of p x p patches, the patches in row-major order over the image
(token 1 + i * 28/p + j is the patch of grid row i, column j), each patch's pixels in row-major order:
exactly a p x p convolution of stride p, whose output grid flattened row-major is the token order.
The class token is token 0; the position embedding is added to every token, the class token included.
There is no dropout but the one before the classifier (none in attention, the MLP or the embedding).

Canonical parameters, in this order (D width, M mlp, T tokens, b each block):

    patch.kernel          (p, p, 1, D) HWIO, the patch projection as a stride-p convolution;
                          reshaped (p*p, D), the dense kernel of a flattened patch
    patch.bias            (D,)
    embedding.class_token (D,)
    embedding.position    (T, D)       row t is added to token t
    block{b}.norm1.scale, block{b}.norm1.bias                  (D,)
    block{b}.query.kernel, .key.kernel, .value.kernel (D, D)   (in, out); output column j belongs to
                          head j // d (heads side by side, in order), as PyTorch's in_proj_weight splits
                          into q, k, v and Flax's and Keras's (D, heads, d) kernels reshape
    block{b}.out.kernel   (D, D), row j from head j // d
    block{b}.norm2.scale, block{b}.norm2.bias                  (D,)
    block{b}.mlp0.kernel  (D, M), .bias (M,);  block{b}.mlp1.kernel (M, D), .bias (D,)
    norm.scale, norm.bias (D,)         the final layer norm
    classifier.kernel     (D, 10), classifier.bias (10,)

Initialisation, drawn from default_rng(seed) in that order: every kernel Glorot-uniform as a dense
layer's (the patch kernel with fan_in p*p, fan_out D; q, k, v and out each (D, D) on its own); every
bias 0; the class token 0 and the position embedding normal with standard deviation 0.02 (as the
original ViT); layer-norm scales 1 and biases 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.models.operations import Operation
from harness.models.spec import CLASSES, IMAGE_SHAPE, ModelSpec, dense_operations, glorot_uniform

LAYER_NORM_EPSILON = 1e-6  # every layer norm's; frameworks' defaults differ (PyTorch 1e-5, Keras 1e-3)
POSITION_STD = 0.02  # the position embedding's initial standard deviation


def activation_product(prefix: str, batch: int, m: int, k: int, n: int) -> tuple[Operation, list[Operation]]:
    """A product of two activations, C (m, n) = A (m, k) @ B (k, n) per sample and head: its forward, and the
    gradients of both operands (dC B^T and A^T dC). No weight: no weight gradient."""
    return (Operation(f"{prefix} forward", "bmm", "forward", (batch, m, k, n)),
            [Operation(f"{prefix} left gradient", "bmm", "left gradient", (batch, m, n, k)),
             Operation(f"{prefix} right gradient", "bmm", "right gradient", (batch, k, m, n))])


@dataclass(frozen=True)
class TransformerSpec(ModelSpec, names=("vit",)):
    """vit: p x p patches -> width, class token and positions -> depth pre-norm blocks of `heads`-head
    self-attention and an MLP of width `mlp` (GELU) -> layer norm -> class token -> dropout -> dense 10."""

    dropout: float = 0.2  # 0.1 moves parity's loss by 5 standard errors at these sizes, too little to check (8)
    width: int = 64
    depth: int = 2
    heads: int = 4
    mlp: int = 128
    patch: int = 7
    epsilon: ClassVar[float] = LAYER_NORM_EPSILON  # fixed, not a size: named here for every adapter to read

    def __post_init__(self) -> None:
        for key in ("width", "depth", "heads", "mlp", "patch"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{key} = {value!r} must be a positive integer")
        if IMAGE_SHAPE[0] % self.patch:
            raise ValueError(f"patch = {self.patch} does not tile a 28x28 image: use 1, 2, 4, 7, 14 or 28")
        if self.width % self.heads:
            raise ValueError(f"width = {self.width} does not split into {self.heads} heads: use a multiple of "
                             f"{self.heads}")

    @property
    def grid(self) -> int:
        """Patches along a side."""
        return IMAGE_SHAPE[0] // self.patch

    @property
    def patches(self) -> int:
        return self.grid**2

    @property
    def tokens(self) -> int:
        """The patches and the class token."""
        return self.patches + 1

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @property
    def block_shapes(self) -> dict[str, tuple[int, ...]]:
        """One encoder block's parameters, in order, without the block{b}. prefix."""
        d, m = self.width, self.mlp
        shapes = {"norm1.scale": (d,), "norm1.bias": (d,)}
        shapes |= {f"{projection}.kernel": (d, d) for projection in ("query", "key", "value", "out")}
        return shapes | {"norm2.scale": (d,), "norm2.bias": (d,), "mlp0.kernel": (d, m), "mlp0.bias": (m,),
                         "mlp1.kernel": (m, d), "mlp1.bias": (d,)}

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.width
        shapes = {"patch.kernel": (self.patch, self.patch, IMAGE_SHAPE[2], d), "patch.bias": (d,),
                  "embedding.class_token": (d,), "embedding.position": (self.tokens, d)}
        for b in range(self.depth):
            shapes |= {f"block{b}.{name}": shape for name, shape in self.block_shapes.items()}
        return shapes | {"norm.scale": (d,), "norm.bias": (d,), "classifier.kernel": (d, CLASSES),
                         "classifier.bias": (CLASSES,)}

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        rng, params = np.random.default_rng(seed), {}
        for name, shape in self.param_shapes.items():
            if name == "patch.kernel":  # as the dense layer of a flattened patch
                params[name] = glorot_uniform(rng, (self.patch * self.patch, self.width)).reshape(shape)
            elif name.endswith(".kernel"):
                params[name] = glorot_uniform(rng, shape)
            elif name == "embedding.position":
                params[name] = rng.normal(0.0, POSITION_STD, shape).astype(np.float32)
            else:  # biases, the class token and layer-norm biases 0; layer-norm scales 1
                params[name] = np.full(shape, 1.0 if name.endswith(".scale") else 0.0, np.float32)
        return params

    def step_operations(self, batch: int) -> list[Operation]:
        """The patch projection (no input gradient: the images'); per block q, k and v as one product of the
        three kernels side by side (PyTorch's in_proj; the fastest form of the three), the scores q k^T and the
        mixing of v by their softmax per sample and head, the output projection and the MLP; the classifier
        on the class token. The backward pass runs them in reverse."""
        rows, d, heads = batch * self.tokens, self.width, batch * self.heads
        forward, backward = [], []

        def add(ahead: Operation, behind: list[Operation]) -> None:
            forward.append(ahead)
            backward[:0] = behind

        add(*dense_operations("patch", batch * self.patches, self.patch * self.patch, d, first=True))
        for b in range(self.depth):
            add(*dense_operations(f"block{b} query-key-value", rows, d, 3 * d))
            add(*activation_product(f"block{b} scores", heads, self.tokens, self.head_width, self.tokens))
            add(*activation_product(f"block{b} mixing", heads, self.tokens, self.tokens, self.head_width))
            add(*dense_operations(f"block{b} out", rows, d, d))
            add(*dense_operations(f"block{b} mlp0", rows, d, self.mlp))
            add(*dense_operations(f"block{b} mlp1", rows, self.mlp, d))
        add(*dense_operations("classifier", batch, d, CLASSES))
        return forward + backward

    @property
    def label(self) -> str:
        """e.g. "patch 7 width 64 depth 2 heads 4 mlp 128"."""
        return f"patch {self.patch} width {self.width} depth {self.depth} heads {self.heads} mlp {self.mlp}"
