"""The NumPy adapter's layers for the LSTM and the Vision Transformer, each a forward and backward pair.

frameworks/numpy_adapter.py imports these (the registry reads only frameworks/*_adapter.py); they
follow its rules: functions over an array module `xp` (numpy or cupy), forward returns what
backward needs, backward writes parameter gradients into the views it is given and returns the
gradient of its input. Read them in this order:

    dense.py        a dense layer over every token (or any leading axes)
    lstm.py         the LSTM, forward and backpropagation through time
    rnn.py          the rnn model: the image's rows through the LSTM, then the classifier
    layer_norm.py   layer normalisation
    gelu.py         GELU, the exact (erf) form
    attention.py    multi-head self-attention
    vit.py          the vit model: patches, class token, positions, pre-norm encoder blocks, classifier
"""

from frameworks.numpy_layers.rnn import RecurrentNetwork
from frameworks.numpy_layers.vit import VisionTransformer

NETWORKS = {"rnn": RecurrentNetwork, "vit": VisionTransformer}  # model name -> its network
