"""The vit model: patches, a class token and positions, pre-norm encoder blocks, the classifier.

    tokens = [class token; patches W_patch + b_patch] + positions           (N, T, D), T = P + 1
    per block:  x <- x + attention(LN1(x));  x <- x + mlp1(GELU(mlp0(LN2(x))))
    logits = dropout(LN(x_class)) W + b                                      the class token alone

Backward runs the same path in reverse: a residual x + f(x) passes its gradient on unchanged and adds
f's input gradient; the class token and the positions, added to every sample, collect their
gradients summed over the batch. The final layer norm reads only the class token: norming the other
tokens, which nothing reads, would change no output.
"""

from __future__ import annotations

from frameworks.numpy_layers.attention import attention_backward, attention_forward
from frameworks.numpy_layers.dense import dense_backward, dense_forward
from frameworks.numpy_layers.gelu import gelu_backward, gelu_forward
from frameworks.numpy_layers.layer_norm import layer_norm_backward, layer_norm_forward


def patchify(images, patch: int):
    """(N, 28, 28, 1) -> (N, P, p*p): the p x p patches, row-major over the image, each patch's pixels row-major."""
    n, side = len(images), images.shape[1]
    grid = side // patch
    patches = images.reshape(n, grid, patch, grid, patch).transpose(0, 1, 3, 2, 4)
    return patches.reshape(n, grid * grid, patch * patch)


def within(params: dict, prefix: str) -> dict:
    """The parameters under a prefix, named without it: within(p, "block0.")["query.kernel"]."""
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def block_forward(x, p, heads: int, epsilon: float, xp):
    """One pre-norm encoder block, with its parameters p (named without the block's prefix)."""
    normed, norm1 = layer_norm_forward(x, p["norm1.scale"], p["norm1.bias"], epsilon, xp)
    attended, attention = attention_forward(normed, p, heads, xp)
    x = x + attended
    normed, norm2 = layer_norm_forward(x, p["norm2.scale"], p["norm2.bias"], epsilon, xp)
    hidden, gelu = gelu_forward(dense_forward(normed, p["mlp0.kernel"], p["mlp0.bias"]), xp)
    x = x + dense_forward(hidden, p["mlp1.kernel"], p["mlp1.bias"])
    return x, (norm1, attention, norm2, normed, gelu, hidden)


def block_backward(dx, saved, p, g, heads: int, xp):
    """The block's parameter gradients into g; returns the gradient of its input."""
    norm1, attention, norm2, normed, gelu, hidden = saved
    dhidden = dense_backward(dx, hidden, p["mlp1.kernel"], g["mlp1.kernel"], g["mlp1.bias"], xp)
    dnormed = dense_backward(gelu_backward(dhidden, gelu, xp), normed, p["mlp0.kernel"], g["mlp0.kernel"],
                             g["mlp0.bias"], xp)
    dx = dx + layer_norm_backward(dnormed, norm2, p["norm2.scale"], g["norm2.scale"], g["norm2.bias"])
    dattended = attention_backward(dx, attention, p, g, heads, xp)
    return dx + layer_norm_backward(dattended, norm1, p["norm1.scale"], g["norm1.scale"], g["norm1.bias"])


class VisionTransformer:
    """forward(images, params, drop) -> (logits, saved); backward(dlogits, saved, params, grads) fills grads.

    `drop(shape)` gives a dropout mask (or None at rate 0); it is None in evaluation.
    """

    def __init__(self, spec, xp) -> None:
        self.spec, self.xp = spec, xp

    def _patch_kernel(self, kernel):
        """The (p, p, 1, D) HWIO patch kernel as the (p*p, D) dense kernel of a flattened patch (a view)."""
        return kernel.reshape(-1, self.spec.width)

    def forward(self, images, p, drop):
        xp, spec = self.xp, self.spec
        patches = patchify(images, spec.patch)
        embedded = dense_forward(patches, self._patch_kernel(p["patch.kernel"]), p["patch.bias"])
        class_tokens = xp.broadcast_to(p["embedding.class_token"], (len(images), 1, spec.width))
        x = xp.concatenate([class_tokens, embedded], axis=1) + p["embedding.position"]
        blocks = []
        for b in range(spec.depth):
            x, saved = block_forward(x, within(p, f"block{b}."), spec.heads, spec.epsilon, xp)
            blocks.append(saved)
        head, norm = layer_norm_forward(x[:, 0], p["norm.scale"], p["norm.bias"], spec.epsilon, xp)
        mask = drop(head.shape) if drop else None
        if mask is not None:
            head = head * mask
        logits = dense_forward(head, p["classifier.kernel"], p["classifier.bias"])
        return logits, (patches, x.shape, blocks, norm, head, mask)

    def backward(self, dlogits, saved, p, g) -> None:
        xp, spec = self.xp, self.spec
        patches, shape, blocks, norm, head, mask = saved
        dhead = dense_backward(dlogits, head, p["classifier.kernel"], g["classifier.kernel"], g["classifier.bias"], xp)
        if mask is not None:
            dhead *= mask
        dx = xp.zeros(shape, dlogits.dtype)
        dx[:, 0] = layer_norm_backward(dhead, norm, p["norm.scale"], g["norm.scale"], g["norm.bias"])
        for b in reversed(range(spec.depth)):
            dx = block_backward(dx, blocks[b], within(p, f"block{b}."), within(g, f"block{b}."), spec.heads, xp)
        dx.sum(axis=0, out=g["embedding.position"])
        dx[:, 0].sum(axis=0, out=g["embedding.class_token"])
        dense_backward(dx[:, 1:], patches, self._patch_kernel(p["patch.kernel"]),
                       self._patch_kernel(g["patch.kernel"]), g["patch.bias"], xp, need_dx=False)
