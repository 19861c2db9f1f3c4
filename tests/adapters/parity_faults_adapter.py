"""The NumPy adapter with one known fault per variant: parity must report each (tests/test_parity_faults.py).

Each fault is one a real adapter could have: the framework's own initialisation kept, the batch
order changed, a learning-rate schedule stepped per batch, dropout wired wrongly, an optimizer
in another form. "correct" is the adapter untouched, which must pass every check.
"""

from dataclasses import replace

import numpy as np

from frameworks.numpy_adapter import NumpyAdapter


class Rescheduled:
    """An OptimizerSpec whose lr_at is changed (a faulty schedule); everything else is the spec's."""

    def __init__(self, spec, rate) -> None:
        self.spec, self.rate = spec, rate

    def lr_at(self, step: int) -> float:
        return self.rate(self.spec.lr_at, step)

    def __getattr__(self, name):
        return getattr(self.spec, name)


class ParityFaultsAdapter(NumpyAdapter):
    name = "faults"
    extra = "dev"
    modules = ("numpy",)
    devices = ("cpu",)
    models = ("mlp", "cnn", "rnn", "vit")
    variants = (
        "correct", "own_init", "reversed_batches", "last_batch_dropped", "rate_decayed_per_step",
        "no_dropout_in_training", "dropout_in_evaluation", "keep_probability_as_rate", "adam_epsilon_other_form",
        "gradients_scaled", "adamw_decay_as_l2", "frozen_dropout_mask", "schedule_stepped_per_epoch",
        "warmup_one_step_late",
    )

    def build(self) -> None:
        fault = self.variant
        if fault == "rate_decayed_per_step" and self.optimizer.decays:
            self.optimizer = replace(self.optimizer, steps_per_epoch=1)
        if fault == "keep_probability_as_rate" and self.model.dropout:
            self.model = replace(self.model, dropout=1 - self.model.dropout)
        if fault == "adam_epsilon_other_form":
            self.options = {**self.options, "adam_epsilon": "sqrt_v"}
        self.variant = "numpy"  # the rest is the correct adapter's
        super().build()
        self.variant = fault
        if fault == "gradients_scaled":
            self._wrap_step(lambda params, grads: grads * np.float32(1.001))
        if fault == "schedule_stepped_per_epoch" and self.optimizer.per_step:  # the rate set once an epoch
            self._reschedule(lambda lr_at, t: lr_at(t - t % self.optimizer.steps_per_epoch))
        if fault == "warmup_one_step_late" and self.optimizer.per_step:  # a scheduler stepped before its first use
            self._reschedule(lambda lr_at, t: lr_at(max(t - 1, 0)))
        if fault == "adamw_decay_as_l2" and self.optimizer.name == "adamw":
            decay = self.optimizer.weight_decay
            self.optimizer_state.weight_decay = 0.0  # no decoupled decay: an L2 term in the gradient instead
            self._wrap_step(lambda params, grads: grads + decay * params)

    def _reschedule(self, rate) -> None:
        """The optimizer's rate of step t becomes rate(the spec's lr_at, t)."""
        self.optimizer_state.spec = Rescheduled(self.optimizer, rate)

    def _wrap_step(self, change_gradients) -> None:
        step = self.optimizer_state.step
        self.optimizer_state.step = lambda params, grads: step(params, change_gradients(params, grads))

    def set_params(self, params):
        if self.variant == "own_init":
            params = self.model.init_params(self.seed + 1)  # as if the framework's initialiser had run
        super().set_params(params)

    def train_epoch(self, batches):
        if self.variant == "reversed_batches":
            batches = batches[::-1]
        if self.variant == "last_batch_dropped":
            batches = batches[:-1]
        return super().train_epoch(batches)

    def forward(self, x, train: bool):
        if self.variant == "no_dropout_in_training":
            train = False
        if self.variant == "dropout_in_evaluation":
            train = True
        if self.variant == "frozen_dropout_mask":
            self.rng = np.random.default_rng(self.seed)  # a compiled step that never advances its key
        return super().forward(x, train)
