"""A plain TensorFlow loop: variables, tf.GradientTape and an Adam update in one tf.function step."""

import tensorflow as tf
from common import EpochTimer, flattened_side, kernels, setup


def layers(job) -> dict[str, tf.Variable]:
    init = tf.keras.initializers.GlorotUniform(seed=job["seed"])
    shapes = {}
    if job["model"] == "cnn":
        channels, side = [1, *job["channels"]], flattened_side(job)
        for i, (a, b, k) in enumerate(zip(channels, channels[1:], kernels(job))):
            shapes[f"conv{i}"] = (k, k, a, b)
        sizes = [side * side * channels[-1], job["dense"], 10]
    else:
        sizes = [784, *job["hidden"], 10]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        shapes[f"dense{i}"] = (a, b)
    return {name: (tf.Variable(init(shape)), tf.Variable(tf.zeros(shape[-1]))) for name, shape in shapes.items()}


def main() -> None:
    job, data, epochs = setup()
    params = layers(job)
    variables = [v for pair in params.values() for v in pair]
    optimizer_state = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    step_count = tf.Variable(0.0)
    x_all, y_all = tf.constant(data.x_train), tf.constant(data.y_train)
    lr, b1, b2, eps, rate = job["lr"], 0.9, 0.999, 1e-8, job["dropout"]

    def forward(x):
        for name, (kernel, bias) in params.items():
            if name.startswith("conv"):
                x = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "VALID") + bias), 2, 2, "VALID")
        x = tf.reshape(x, [tf.shape(x)[0], -1])
        dense = [pair for name, pair in params.items() if name.startswith("dense")]
        for kernel, bias in dense[:-1]:
            x = tf.nn.relu(x @ kernel + bias)
        x = tf.nn.dropout(x, rate)
        return x @ dense[-1][0] + dense[-1][1]

    @tf.function(jit_compile=job["variant"] == "xla")
    def step(indices):
        x, y = tf.gather(x_all, indices), tf.gather(y_all, indices)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, forward(x)))
        step_count.assign_add(1.0)
        for g, p, (m, v) in zip(tape.gradient(loss, variables), variables, optimizer_state):
            m.assign(b1 * m + (1 - b1) * g)
            v.assign(b2 * v + (1 - b2) * tf.square(g))
            p.assign_sub(lr * (m / (1 - b1**step_count)) / (tf.sqrt(v / (1 - b2**step_count)) + eps))
        return loss

    for batches in epochs:
        with EpochTimer():
            for indices in tf.constant(batches):
                loss = step(indices)
            loss.numpy()


if __name__ == "__main__":
    main()
