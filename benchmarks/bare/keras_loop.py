"""A plain Keras 3 script, as keras.io's MNIST examples: Sequential, compile, fit (KERAS_BACKEND picks the backend)."""

import time

import keras
from common import kernels, report, setup


class EpochTimes(keras.callbacks.Callback):
    """Reports each epoch's training seconds (Keras has read the epoch's loss back, so the device is done)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        report(time.perf_counter() - self.start)


def model(job) -> keras.Sequential:
    layers = [keras.Input((28, 28, 1))]
    if job["model"] == "cnn":
        for channels, k in zip(job["channels"], kernels(job)):
            layers += [keras.layers.Conv2D(channels, k, activation="relu"), keras.layers.MaxPooling2D(2)]
        hidden = [job["dense"]]
    else:
        hidden = job["hidden"]
    layers.append(keras.layers.Flatten())
    layers += [keras.layers.Dense(size, activation="relu") for size in hidden]
    layers += [keras.layers.Dropout(job["dropout"]), keras.layers.Dense(10)]
    return keras.Sequential(layers)


def main() -> None:
    job, data, epochs = setup()
    keras.utils.set_random_seed(job["seed"])
    net = model(job)
    settings = {"steps_per_execution": 1 if keras.backend.backend() == "torch" else 32, **job.get("options", {})}
    net.compile(optimizer=keras.optimizers.Adam(job["lr"]),  # the loss and no metric, as the adapter trains
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **settings)
    net.fit(data.x_train, data.y_train, batch_size=job["batch_size"], epochs=job["epochs"], shuffle=True,
            verbose=0, callbacks=[EpochTimes()])


if __name__ == "__main__":
    main()
