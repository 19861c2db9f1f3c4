"""A plain JAX loop: Flax NNX modules and Optax, the state split once and a jitted step over it.

`jit` calls the jitted step per batch; `scan` runs the epoch in one jitted lax.scan, as Flax's
performance guide suggests for small steps.
"""

from functools import partial

import jax
import numpy as np
import optax
from common import EpochTimer, flattened_side, kernels, setup
from flax import nnx


def max_pool(x):
    """2x2 max pool as reshape + max: XLA:CPU runs its gradient 8x faster than nnx.max_pool's."""
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class MLP(nnx.Module):
    def __init__(self, job, rngs):
        sizes = [784, *job["hidden"], 10]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes, sizes[1:])])
        self.dropout = nnx.Dropout(job["dropout"], rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](self.dropout(x))


class CNN(nnx.Module):
    def __init__(self, job, rngs):
        channels = [1, *job["channels"]]
        self.convs = nnx.List([nnx.Conv(a, b, (k, k), padding="VALID", rngs=rngs)
                               for a, b, k in zip(channels, channels[1:], kernels(job))])
        side = flattened_side(job)
        self.hidden = nnx.Linear(side * side * channels[-1], job["dense"], rngs=rngs)
        self.out = nnx.Linear(job["dense"], 10, rngs=rngs)
        self.dropout = nnx.Dropout(job["dropout"], rngs=rngs)

    def __call__(self, x):
        for conv in self.convs:
            x = max_pool(nnx.relu(conv(x)))
        return self.out(self.dropout(nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))))


def step(graphdef, state, x, y, indices):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x[indices]), y[indices]).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


@partial(jax.jit, static_argnums=0, donate_argnums=1)
def jit_step(graphdef, state, x, y, batches, i):
    state, loss = step(graphdef, state, x, y, batches[i])
    return state, loss, i + 1  # the indices and the step number stay on the device


@partial(jax.jit, static_argnums=0, donate_argnums=1)
def scan_epoch(graphdef, state, x, y, batches):
    return jax.lax.scan(lambda s, indices: step(graphdef, s, x, y, indices), state, batches)


def main() -> None:
    job, data, epochs = setup()
    jax.config.update("jax_default_matmul_precision", "highest")
    device = jax.devices(job["device"])[0]
    with jax.default_device(device):
        model = (MLP if job["model"] == "mlp" else CNN)(job, nnx.Rngs(job["seed"]))
        optimizer = nnx.Optimizer(model, optax.adam(job["lr"]), wrt=nnx.Param)
    model.train()
    graphdef, state = nnx.split((model, optimizer))
    state = jax.device_put(state, device)  # committed, as the step's outputs are: one compile, not two
    x, y = jax.device_put(data.x_train, device), jax.device_put(data.y_train, device)
    for batches in epochs:
        with EpochTimer():
            batches = jax.device_put(batches, device)
            if job["variant"] == "scan":
                state, losses = scan_epoch(graphdef, state, x, y, batches)
            else:
                i = jax.device_put(np.int32(0), device)
                for _ in range(len(batches)):
                    state, losses, i = jit_step(graphdef, state, x, y, batches, i)
            jax.block_until_ready(losses)


if __name__ == "__main__":
    main()
