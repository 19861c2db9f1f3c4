"""OptimizerSpec: the optimizer and its learning-rate schedule, defined once for every framework."""

from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("epoch_decay", "warmup_cosine")


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer settings every adapter maps exactly onto its framework's optimizer.

    sgd:   v <- momentum * v + g;  p <- p - lr * v   (nesterov: p <- p - lr * (g + momentum * v))
    adam:  PyTorch/Optax form, eps added outside the square root of the bias-corrected v.
    adamw: adam plus decoupled weight decay p <- p - lr * weight_decay * p.
    The learning rate of step t (0-based) follows the schedule:
    epoch_decay:   lr * lr_decay ** (t // steps_per_epoch), a staircase exponential decay by lr_decay after
                   every epoch (1.0 keeps it constant);
    warmup_cosine: per step, a linear warm-up from lr * lr_start to lr over the first W = round(warmup * T)
                   steps, then a cosine decay to lr * lr_end at step T = schedule_steps (the training's
                   total_steps, or schedule_epochs of steps when set), and lr * lr_end after it:
                   lr * (lr_end + (1 - lr_end) * (1 + cos(pi * (t - W) / (T - W))) / 2). It is optax's
                   warmup_cosine_decay_schedule and Keras's CosineDecay with warm-up, written once.
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_decay: float = 1.0
    schedule: str = "epoch_decay"
    warmup: float = 0.0  # warmup_cosine: the share of the steps spent warming up
    lr_start: float = 0.0  # warmup_cosine: the first step's rate, as a fraction of lr
    lr_end: float = 0.0  # warmup_cosine: the last step's rate, as a fraction of lr
    schedule_epochs: float = 0.0  # warmup_cosine: the schedule's length in epochs (0: the training's)
    steps_per_epoch: int = 0  # set by the worker from the training set and batch size
    total_steps: int = 0  # set by the worker: the cell's epochs times steps_per_epoch

    def __post_init__(self) -> None:
        """Settings no framework could map: refused here, once, for every adapter."""
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}: use {', '.join(OPTIMIZERS)}")
        if self.weight_decay and self.name != "adamw":
            raise ValueError(f"weight_decay is defined only for adamw (decoupled), not for {self.name}")
        if self.nesterov and not (self.name == "sgd" and self.momentum > 0):
            raise ValueError("nesterov needs sgd with a momentum above 0")
        if self.name != "sgd" and self.momentum:
            raise ValueError(f"momentum is an sgd setting; {self.name} has betas")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: use {', '.join(SCHEDULES)}")
        if self.schedule == "warmup_cosine" and self.lr_decay != 1.0:
            raise ValueError("lr_decay is the epoch_decay schedule's factor; warmup_cosine sets its own rates")
        if self.schedule == "epoch_decay" and (self.warmup or self.lr_start or self.lr_end or self.schedule_epochs):
            raise ValueError("warmup, lr_start, lr_end and schedule_epochs shape the warmup_cosine schedule: set "
                             "schedule = 'warmup_cosine' to use them")

    @property
    def per_step(self) -> bool:
        """Whether the rate changes from step to step (warmup_cosine), not only between epochs."""
        return self.schedule == "warmup_cosine" and self.total_steps > 0

    @property
    def decays(self) -> bool:
        """Whether the rate changes at all during training."""
        return self.per_step or (self.lr_decay != 1.0 and self.steps_per_epoch > 0)

    @property
    def schedule_steps(self) -> int:
        """T: the step at which the warm-up and cosine decay ends (the rate stays at lr * lr_end after it)."""
        return round(self.schedule_epochs * self.steps_per_epoch) if self.schedule_epochs else self.total_steps

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup * self.schedule_steps)

    def form(self, adam_epsilon: str, sgd_momentum: str) -> str:
        """The form an adapter computes this optimizer in (its declarations), as runs.csv shows it."""
        if self.name in ("adam", "adamw"):
            where = "sqrt(v_hat)" if adam_epsilon == "sqrt_v_hat" else "sqrt(v), corrections in the rate"
            return f"eps added to {where}"
        if not self.momentum:
            return "plain"
        return f"momentum buffer of {'gradients' if sgd_momentum == 'gradient' else 'rate-scaled steps'}"

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based count of the updates before it)."""
        if self.per_step:
            warmup, total = self.warmup_steps, self.schedule_steps
            if step < warmup:
                return self.lr * (self.lr_start + (1 - self.lr_start) * step / warmup)
            progress = min(step - warmup, total - warmup) / max(total - warmup, 1)
            return self.lr * (self.lr_end + (1 - self.lr_end) * (1 + math.cos(math.pi * progress)) / 2)
        return self.lr * self.lr_decay ** (step // self.steps_per_epoch) if self.decays else self.lr
