"""A plain NumPy loop. NumPy has no framework to call: the model IS frameworks/numpy_adapter.py, so
this drives its forward, backward and optimizer directly, without the adapter's train_epoch.
On a GPU cell the same code runs on CuPy, as the adapter's cupy variant does."""

from common import EpochTimer, setup

from frameworks.numpy_adapter import NumpyAdapter, softmax_cross_entropy
from harness.models import OptimizerSpec, model_spec


def main() -> None:
    job, data, epochs = setup()
    sizes = {"hidden": job["hidden"]} if job["model"] == "mlp" else {
        "channels": job["channels"], "dense": job["dense"], "kernel_size": job.get("kernel_size", 3)}
    spec = model_spec(job["model"], dropout=job["dropout"], **sizes)
    variant = "cupy" if job["device"] == "gpu" else "numpy"
    net = NumpyAdapter(spec, OptimizerSpec("adam", lr=job["lr"]), device=job["device"], variant=variant,
                       seed=job["seed"], threads=job["threads"], options={})
    net.set_params(spec.init_params(job["seed"]))
    net.load_data(data.x_train, data.y_train, data.x_eval, data.y_eval)
    for batches in epochs:
        with EpochTimer():
            for indices in net.xp.asarray(batches):  # one copy of the epoch's indices to the device
                logits, saved = net.forward(net.x_train[indices], train=True)
                _, dlogits = softmax_cross_entropy(logits, net.y_train[indices], net.xp)
                net.backward(dlogits, saved)
                net.optimizer_state.step(net.flat_params, net.flat_grads)
            net._sync()  # the GPU's queue drained before the timer stops


if __name__ == "__main__":
    main()
