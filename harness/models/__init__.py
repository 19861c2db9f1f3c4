"""The models and the optimizer, described once, so that every framework builds and trains the same network.

    spec.py          ModelSpec: what every model gives the adapters (and builds each kind by name)
    feedforward.py   mlp and cnn: stacks of dense and convolution layers
    recurrent.py     rnn: an LSTM over the image's rows
    transformer.py   vit: a Vision Transformer over 7x7 patches
    operations.py    Operation: a training step's heavy operations, for the FLOPs and the op floor
    optimizer.py     OptimizerSpec: the optimizer and its learning-rate schedule
"""

from harness.models.feedforward import FeedForwardSpec
from harness.models.operations import Operation
from harness.models.optimizer import OPTIMIZERS, SCHEDULES, OptimizerSpec
from harness.models.recurrent import RecurrentSpec
from harness.models.spec import CLASSES, IMAGE_SHAPE, ModelSpec
from harness.models.transformer import TransformerSpec

__all__ = ["CLASSES", "IMAGE_SHAPE", "OPTIMIZERS", "SCHEDULES", "FeedForwardSpec", "ModelSpec", "Operation",
           "OptimizerSpec", "RecurrentSpec", "TransformerSpec", "floor_key", "model_spec"]


def floor_key(spec: ModelSpec, batch: int) -> str:
    """Names the op floor of a model at a batch size, e.g. "mlp 784-512-512-10 at batch 128"."""
    return f"{spec.name} {spec.label} at batch {batch}"


def model_spec(name: str, **sizes) -> ModelSpec:
    """A ModelSpec from config values (lists become tuples so the spec stays hashable)."""
    return ModelSpec(name, **{k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()})
