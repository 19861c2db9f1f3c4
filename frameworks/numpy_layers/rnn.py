"""The rnn model: an image's 28 rows as 28 steps of an LSTM, its last hidden state -> dropout -> dense 10."""

from __future__ import annotations

from frameworks.numpy_layers.dense import dense_backward, dense_forward
from frameworks.numpy_layers.lstm import lstm_backward, lstm_forward
from harness.models import IMAGE_SHAPE


class RecurrentNetwork:
    """forward(images, params, drop) -> (logits, saved); backward(dlogits, saved, params, grads) fills grads.

    `drop(shape)` gives a dropout mask (or None at rate 0); it is None in evaluation.
    """

    def __init__(self, spec, xp) -> None:
        self.spec, self.xp = spec, xp

    def forward(self, images, p, drop):
        xp, (steps, features) = self.xp, IMAGE_SHAPE[:2]
        rows = images.reshape(len(images), steps, features)
        x = xp.ascontiguousarray(rows.transpose(1, 0, 2))  # time first: x[t] holds row t of every image
        h, lstm = lstm_forward(x, p["lstm.kernel"], p["lstm.recurrent_kernel"], p["lstm.bias"], xp)
        mask = drop(h.shape) if drop else None
        if mask is not None:
            h = h * mask
        return dense_forward(h, p["classifier.kernel"], p["classifier.bias"]), (lstm, h, mask)

    def backward(self, dlogits, saved, p, g) -> None:
        lstm, h, mask = saved
        dh = dense_backward(dlogits, h, p["classifier.kernel"], g["classifier.kernel"], g["classifier.bias"], self.xp)
        if mask is not None:
            dh *= mask
        lstm_backward(dh, lstm, p["lstm.recurrent_kernel"], g["lstm.kernel"], g["lstm.recurrent_kernel"],
                      g["lstm.bias"], self.xp)
