"""Operation: one heavy operation of a training step, as every library's probe runs it alone (the op floor)."""

from __future__ import annotations

from dataclasses import dataclass

# The roles whose product reads its first operand transposed (x^T dy) or its second (dy W^T).
FIRST_TRANSPOSED = ("weight gradient", "right gradient")
SECOND_TRANSPOSED = ("input gradient", "left gradient")


@dataclass(frozen=True)
class Operation:
    """One heavy operation of a training step, as every library's probe runs it alone.

    matmul: C (m, n) = A (m, k) @ B (k, n); the weight gradient's A is the layer input stored (k, m)
      (it computes x^T dy) and the input gradient's B the kernel stored (n, k) (dy W^T), as a step has them.
    bmm: attention's products, one (m, k) @ (k, n) per sample and head, C (batch, m, n); the left gradient
      (of the first operand, dC B^T) reads B as the forward stored it, (batch, n, k) seen transposed, and the
      right gradient (of the second, A^T dC) reads A as (batch, k, m), as a step has them. Neither operand is a
      weight, so a bmm has no weight gradient.
    conv: a 'valid' stride-1 convolution of an NHWC batch (batch, height, width, in) with an HWIO
      kernel (kernel, kernel, in, out); its weight gradient takes the input and the output's gradient,
      its input gradient the kernel and the output's gradient.
    count: how many times one step runs it, one after another (the LSTM's recurrent product, once per
      time step); a probe times it once, and its FLOPs and floor time are count times one's.
    """

    name: str  # "dense1 weight gradient"
    kind: str  # "matmul", "bmm" or "conv"
    role: str  # "forward", "weight gradient" or "input gradient"; a bmm's "left gradient" or "right gradient"
    dims: tuple[int, ...]  # matmul (m, k, n); bmm (batch, m, k, n); conv (batch, height, width, in, out, kernel)
    count: int = 1

    @property
    def flops(self) -> int:
        if self.kind == "matmul":
            m, k, n = self.dims
            return 2 * m * k * n * self.count
        if self.kind == "bmm":
            batch, m, k, n = self.dims
            return 2 * batch * m * k * n * self.count
        batch, height, width, c, o, k = self.dims
        return 2 * batch * (height - k + 1) * (width - k + 1) * k * k * c * o * self.count

    @property
    def shape(self) -> str:
        """The operands as a step holds them, e.g. "784x128 (transposed) @ 128x512"; "28 x (...)" when repeated."""
        if self.kind == "conv":
            batch, height, width, c, o, k = self.dims
            text = f"{batch}x{height}x{width}x{c} * {k}x{k}x{c}x{o}"
        else:
            *batch, m, k, n = self.dims
            stack = "".join(f"{b}x" for b in batch)
            a = f"{stack}{k}x{m} (transposed)" if self.role in FIRST_TRANSPOSED else f"{stack}{m}x{k}"
            b = f"{stack}{n}x{k} (transposed)" if self.role in SECOND_TRANSPOSED else f"{stack}{k}x{n}"
            text = f"{a} @ {b}"
        return f"{self.count} x ({text})" if self.count > 1 else text

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "role": self.role, "dims": list(self.dims),
                "count": self.count, "shape": self.shape, "flops": self.flops}
