"""An adapter that fails on purpose, one way per variant: the runner must record each and go on."""

import os
import time

import numpy as np

from harness.adapter import Adapter, Unsupported


class FaultyAdapter(Adapter):
    name = "faulty"
    extra = "dev"
    modules = ("numpy",)
    variants = ("raise", "exit", "hang", "skip", "nan", "missing")
    variant_modules = {"missing": ("no_such_module_for_tests",)}

    def build(self):
        if self.variant == "skip":
            raise Unsupported("this variant never runs here")
        self.params = {}

    def set_params(self, params):
        self.params = {k: v.copy() for k, v in params.items()}

    def get_params(self):
        return self.params

    def load_data(self, x_train, y_train, x_eval, y_eval):
        self.n_eval = len(y_eval)

    def train_epoch(self, batches):
        if self.variant == "raise":
            raise RuntimeError("the faulty adapter failed on purpose")
        if self.variant == "exit":
            os.abort()
        if self.variant == "hang":
            time.sleep(3600)
        return float("nan") if self.variant == "nan" else float(np.log(10))

    def evaluate(self):
        return float(np.log(10)), 0.1
