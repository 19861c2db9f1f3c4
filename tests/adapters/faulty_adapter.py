"""An adapter that fails on command, one way per variant: the runner must record each and go on.

    raise      an exception in train_epoch            abort     the process aborts (SIGABRT)
    segfault   a segmentation fault (SIGSEGV)         sigkill   killed from outside (SIGKILL)
    hang       never returns                          skip      Unsupported: never runs here
    nan, inf   the training loss becomes NaN / inf    nan_eval  the evaluation loss becomes NaN
    allocate   holds 600 MB (for max_rss_mb)          missing   needs a module that is not installed
    slow       a normal cell whose epochs take 0.3 s (to be interrupted)
"""

import ctypes
import os
import signal
import time

import numpy as np

from harness.adapter import Adapter, Unsupported


class FaultyAdapter(Adapter):
    name = "faulty"
    extra = "dev"
    modules = ("numpy",)
    variants = ("raise", "abort", "segfault", "sigkill", "hang", "skip", "nan", "inf", "nan_eval", "allocate",
                "missing", "slow")
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
        self.y_eval = y_eval

    def train_epoch(self, batches):
        fault = self.variant
        if fault == "raise":
            raise RuntimeError("the faulty adapter failed on purpose")
        if fault == "abort":
            os.abort()
        if fault == "segfault":
            ctypes.string_at(0)  # reads address 0
        if fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "hang":
            time.sleep(3600)
        if fault == "allocate":
            self.held = np.ones(600 << 17)  # 600 MB of float64, every page touched
            time.sleep(5)
        if fault == "slow":
            time.sleep(0.3)
        return {"nan": float("nan"), "inf": float("inf")}.get(fault, float(np.log(10)))

    def evaluate(self):
        return float("nan") if self.variant == "nan_eval" else float(np.log(10)), 0.1
