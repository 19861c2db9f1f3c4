"""The PyTorch adapter: the MLP and CNN as nn.Sequential, the LSTM (nn.LSTM) and the ViT (nn.MultiheadAttention
in torchvision's pre-norm encoder block) as small modules, trained with torch.optim and F.cross_entropy.

Written the way PyTorch's MNIST example is: a model module, an optimizer, and a train loop of
zero_grad / forward / cross_entropy / backward / step. The `compile` variant runs the same
train step through torch.compile (Inductor): the forward and backward pass become compiled graphs
(Dynamo breaks the graph at loss.backward()) and so does the optimizer step. It compiles lazily,
on the first batch, and with Inductor's on-disk caches off, so every cell's first epoch holds
the whole compile.

Layouts are converted at the boundary only: canonical HWIO conv kernels and (in, out) dense
kernels become PyTorch's OIHW and (out, in) in set_params (and back in get_params), and the
images go from NHWC to NCHW once in load_data. The canonical CNN flattens in NHWC order, PyTorch
in NCHW order, so the rows of the first dense kernel are permuted at the boundary too, and the
forward pass stays an ordinary flatten. The LSTM's and the ViT's tensors cross it through `Link`s:
nn.LSTM's two biases hold the canonical one and zeros (frozen), nn.MultiheadAttention's fused
in_proj_weight the query, key and value kernels, and the patch projection is a stride-7 Conv2d.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.adapter import Adapter, DeviceUnavailable, Unsupported
from harness.models import CLASSES, IMAGE_SHAPE, ModelSpec, OptimizerSpec
from harness.models.operations import FIRST_TRANSPOSED, SECOND_TRANSPOSED

# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------


def head(layers: OrderedDict, in_features: int, hidden: tuple[int, ...], dropout: float, first: int = 0) -> None:
    """Dense + ReLU per hidden size, then dropout (skipped at rate 0), then the dense layer to the classes."""
    for i, out_features in enumerate(hidden, start=first):
        layers[f"dense{i}"] = nn.Linear(in_features, out_features)
        layers[f"relu_dense{i}"] = nn.ReLU()
        in_features = out_features
    if dropout > 0:
        layers["dropout"] = nn.Dropout(dropout)
    layers[f"dense{first + len(hidden)}"] = nn.Linear(in_features, CLASSES)


def mlp(spec: ModelSpec) -> nn.Sequential:
    """784 -> hidden (ReLU)... -> dropout -> 10. Module names are the canonical parameter prefixes."""
    layers = OrderedDict(flatten=nn.Flatten())
    head(layers, int(np.prod(IMAGE_SHAPE)), spec.hidden, spec.dropout)
    return nn.Sequential(layers)


def cnn(spec: ModelSpec) -> nn.Sequential:
    """[conv kxk -> ReLU -> maxpool 2x2] per channel count -> flatten -> dense ReLU -> dropout -> dense 10."""
    layers, in_channels = OrderedDict(), IMAGE_SHAPE[2]
    for i, (out_channels, k) in enumerate(zip(spec.channels, spec.kernel_sizes)):
        layers[f"conv{i}"] = nn.Conv2d(in_channels, out_channels, k)
        layers[f"relu_conv{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        in_channels = out_channels
    layers["flatten"] = nn.Flatten()
    side, _ = spec.feature_map_side(len(spec.channels))
    head(layers, side * side * in_channels, (spec.dense,), spec.dropout)
    return nn.Sequential(layers)


class LstmClassifier(nn.Module):
    """The 28 rows of an image as 28 steps of nn.LSTM (batch_first), the last hidden state -> dropout -> dense 10.

    nn.LSTM adds two biases, b_ih + b_hh (cuDNN's form); the canonical LSTM has one. b_hh is kept at zero and
    out of training (requires_grad off, and so out of the optimizer), so that b_ih alone is the bias and
    moves at the canonical rate (two trained copies would move their sum at twice it). torch.compile leaves
    nn.LSTM untraced by default (torch._dynamo.config.allow_rnn = False): the compile variant runs it eagerly,
    as a user's compiled step would.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.lstm = nn.LSTM(IMAGE_SHAPE[1], spec.hidden, batch_first=True)
        self.lstm.bias_hh_l0.requires_grad_(False)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(spec.hidden, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rows = images.reshape(len(images), IMAGE_SHAPE[0], IMAGE_SHAPE[1])  # NCHW with C = 1: (N, steps, features)
        _, (h, _) = self.lstm(rows)
        return self.classifier(self.dropout(h[-1]))


class EncoderBlock(nn.Module):
    """x + attention(LN1(x)), then + MLP(LN2(x)): torchvision's ViT EncoderBlock, without attention's biases."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(spec.width, eps=spec.epsilon)
        self.attention = nn.MultiheadAttention(spec.width, spec.heads, bias=False, batch_first=True)
        self.norm2 = nn.LayerNorm(spec.width, eps=spec.epsilon)
        self.mlp = nn.Sequential(OrderedDict(mlp0=nn.Linear(spec.width, spec.mlp), gelu=nn.GELU(approximate="none"),
                                             mlp1=nn.Linear(spec.mlp, spec.width)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = x + self.attention(normed, normed, normed, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """7x7 patches by a stride-7 Conv2d -> [class token; patches] + positions -> encoder blocks -> LayerNorm of the
    class token -> dropout -> dense 10."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.patch = nn.Conv2d(IMAGE_SHAPE[2], spec.width, spec.patch, stride=spec.patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        self.position = nn.Parameter(torch.zeros(1, spec.tokens, spec.width))
        self.blocks = nn.Sequential(*(EncoderBlock(spec) for _ in range(spec.depth)))
        self.norm = nn.LayerNorm(spec.width, eps=spec.epsilon)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(spec.width, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.patch(images).flatten(2).transpose(1, 2)  # (N, D, 4, 4) -> (N, 16, D): the grid row-major
        tokens = torch.cat([self.class_token.expand(len(images), -1, -1), patches], dim=1) + self.position
        return self.classifier(self.dropout(self.norm(self.blocks(tokens)[:, 0])))


NETWORKS = {"mlp": mlp, "cnn": cnn, "rnn": LstmClassifier, "vit": VisionTransformer}


# ---------------------------------------------------------------------------------------------
# Canonical layout <-> PyTorch layout
# ---------------------------------------------------------------------------------------------


def flattened_feature_map(spec: ModelSpec) -> tuple[int, int, int] | None:
    """(H, W, C) of the CNN's last feature map, whose flatten order differs between NHWC and NCHW."""
    if spec.name != "cnn":
        return None
    side, _ = spec.feature_map_side(len(spec.channels))
    return side, side, spec.channels[-1]


def to_torch(name: str, value: np.ndarray, feature_map: tuple[int, int, int] | None) -> np.ndarray:
    """HWIO -> OIHW; (in, out) -> (out, in), with the CNN's dense0 rows put from (H, W, C) into (C, H, W) order."""
    if name.endswith(".bias"):
        return value
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if name == "dense0.kernel" and feature_map:
        h, w, c = feature_map
        value = value.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
    return value.T


def to_canonical(name: str, value: np.ndarray, feature_map: tuple[int, int, int] | None) -> np.ndarray:
    """The inverse of to_torch."""
    if name.endswith(".bias"):
        return value
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    value = value.T
    if name == "dense0.kernel" and feature_map:
        h, w, c = feature_map
        value = value.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)
    return value


def torch_name(canonical: str) -> str:
    """dense0.kernel -> dense0.weight (the module names are the canonical prefixes)."""
    return canonical.replace(".kernel", ".weight")


@dataclass(frozen=True)
class Link:
    """Canonical tensors <-> PyTorch state tensors, for the LSTM and the ViT, whose layouts are not one to one:
    to_torch takes the canonical values and returns the PyTorch ones, to_canonical the reverse."""

    canonical: tuple[str, ...]
    torch: tuple[str, ...]
    to_torch: Callable[..., tuple[np.ndarray, ...]]
    to_canonical: Callable[..., tuple[np.ndarray, ...]]


def same(canonical: str, name: str) -> Link:
    """A tensor PyTorch holds as the spec does (a bias, a layer norm's scale)."""
    return Link((canonical,), (name,), lambda v: (v,), lambda v: (v,))


def dense(canonical: str, name: str) -> Link:
    """An (in, out) kernel as PyTorch's (out, in) weight."""
    return Link((canonical,), (name,), lambda k: (k.T,), lambda w: (w.T,))


def rnn_links(spec: ModelSpec) -> list[Link]:
    """weight_ih_l0 = kernel^T, weight_hh_l0 = recurrent_kernel^T (the same gate order i, f, g, o), bias_ih_l0 the
    bias and bias_hh_l0 zeros (read back as their sum)."""
    return [dense("lstm.kernel", "lstm.weight_ih_l0"), dense("lstm.recurrent_kernel", "lstm.weight_hh_l0"),
            Link(("lstm.bias",), ("lstm.bias_ih_l0", "lstm.bias_hh_l0"), lambda b: (b, np.zeros_like(b)),
                 lambda ih, hh: (ih + hh,)),
            dense("classifier.kernel", "classifier.weight"), same("classifier.bias", "classifier.bias")]


def vit_links(spec: ModelSpec) -> list[Link]:
    """The patch kernel HWIO -> OIHW; the class token (D,) as (1, 1, D) and the positions (T, D) as (1, T, D),
    broadcast over the batch; per block the query, key and value kernels transposed and stacked into
    in_proj_weight (3D, D), whose row blocks q, k, v each hold the heads in order; every dense kernel transposed."""
    links = [Link(("patch.kernel",), ("patch.weight",), lambda k: (k.transpose(3, 2, 0, 1),),
                  lambda w: (w.transpose(2, 3, 1, 0),)),
             same("patch.bias", "patch.bias"),
             Link(("embedding.class_token",), ("class_token",), lambda v: (v.reshape(1, 1, -1),),
                  lambda v: (v.reshape(-1),)),
             Link(("embedding.position",), ("position",), lambda v: (v[None],), lambda v: (v[0],))]
    for b in range(spec.depth):
        ours, theirs = f"block{b}.", f"blocks.{b}."
        qkv = tuple(f"{ours}{name}.kernel" for name in ("query", "key", "value"))
        links += [same(f"{ours}norm1.scale", f"{theirs}norm1.weight"), same(f"{ours}norm1.bias", f"{theirs}norm1.bias"),
                  Link(qkv, (f"{theirs}attention.in_proj_weight",), lambda q, k, v: (np.concatenate([q.T, k.T, v.T]),),
                       lambda w: tuple(part.T for part in np.split(w, 3))),
                  dense(f"{ours}out.kernel", f"{theirs}attention.out_proj.weight"),
                  same(f"{ours}norm2.scale", f"{theirs}norm2.weight"), same(f"{ours}norm2.bias", f"{theirs}norm2.bias")]
        for layer in ("mlp0", "mlp1"):
            links += [dense(f"{ours}{layer}.kernel", f"{theirs}mlp.{layer}.weight"),
                      same(f"{ours}{layer}.bias", f"{theirs}mlp.{layer}.bias")]
    return links + [same("norm.scale", "norm.weight"), same("norm.bias", "norm.bias"),
                    dense("classifier.kernel", "classifier.weight"), same("classifier.bias", "classifier.bias")]


LINKS = {"rnn": rnn_links, "vit": vit_links}


# ---------------------------------------------------------------------------------------------
# Optimizer, device, threads
# ---------------------------------------------------------------------------------------------


def make_optimizer(spec: OptimizerSpec, params) -> torch.optim.Optimizer:
    """OptimizerSpec onto torch.optim; Adam(W) fused (one kernel for every tensor), as PyTorch's docs advise.

    On the CPU the default is a loop of a dozen ops per tensor (foreach is GPU-only): fused Adam makes
    the MLP's whole step 19% faster here.
    """
    # A changing rate is a tensor, changed in place by the schedule: a float would make torch.compile recompile.
    lr = torch.tensor(spec.lr) if spec.decays else spec.lr
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, nesterov=spec.nesterov)
    adam = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
    return adam(params, lr=lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay, fused=True)


def make_schedule(spec: OptimizerSpec, optimizer: torch.optim.Optimizer):
    """A per-step rate (OptimizerSpec.lr_at's warm-up and cosine decay) as a LambdaLR, stepped after each
    optimizer step; None otherwise (a per-epoch decay is set once a call, which costs no Python per step)."""
    if not spec.per_step:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: spec.lr_at(step) / spec.lr)


def torch_device(device: str) -> torch.device:
    if device == "cpu":
        return torch.device("cpu")
    if device != "gpu":
        raise Unsupported(f"torch has no device {device!r}")
    if not torch.cuda.is_available():
        reason = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA device or driver found"
        raise DeviceUnavailable(f"CUDA is not available to PyTorch: {reason} (torch {torch.__version__})")
    return torch.device("cuda")


def use_full_float32() -> None:
    """Full float32 products everywhere (no TF32 on Ampere and newer): parity and fairness need it."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def set_threads(threads: int) -> None:
    """Intra-op threads, and inter-op threads, which PyTorch accepts only before its first parallel work."""
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set (a second adapter in this process)
        torch.set_num_interop_threads(threads)


def cpu_library() -> str:
    """The versions of what computes on the CPU, as PyTorch's build configuration reports them."""
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.-]+)", config)
    onednn = re.search(r"MKL-DNN v([\d.]+)", config)
    capability = re.search(r"CPU capability usage: (\w+)", config)
    parts = [f"mkl {mkl.group(1)}" if mkl else "blas", f"onednn {onednn.group(1)}" if onednn else "",
             capability.group(1).lower() if capability else ""]
    return " ".join(p for p in parts if p)


def cpu_backend(model: str) -> str:
    """MKL (or the build's BLAS) for the dense layers; oneDNN, where present, for the convolutions."""
    blas = "mkl" if torch.backends.mkl.is_available() else "blas"
    return f"{blas}+onednn" if model == "cnn" and torch.backends.mkldnn.is_available() else blas


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


def linear_operands(role: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense layer's product as nn.Linear's autograd runs it, on its (out, in) weight `w`: forward x @ w.t(),
    the weight gradient dy.t() @ x (the (out, in) gradient), the input gradient dy @ w. `a` and `b` come in the
    canonical layout of harness.execute.probes.operands; the same values, stored as torch stores them."""
    if role == "forward":  # b: the canonical (in, out) weight, stored (out, in)
        return a, b.t().contiguous().t()
    if role == "weight gradient":  # a: x stored (batch, in); b: dy (batch, out)
        return b.t(), a
    return a, b.t().contiguous()  # input gradient: b stored (in, out) is w.t(); w itself is (out, in)


class TorchAdapter(Adapter):
    """MLP and CNN as nn.Sequential; eager, or torch.compile'd (Inductor) train and eval steps.

    Dropout (nn.Dropout, before the last dense layer) draws from PyTorch's default generator,
    seeded with torch.manual_seed(seed). The CNN keeps its activations in channels_last (NHWC) memory,
    as PyTorch's CPU performance guide advises for convolutions with oneDNN: 1.4x faster here than
    the default layout (options["channels_last"] = false turns it off). The logical shapes, and so
    the flatten order, stay NCHW.
    """

    name = "torch"
    extra = "torch"
    modules = ("torch",)
    variants = ("eager", "compile")
    devices = ("cpu", "gpu")
    models = ("mlp", "cnn", "rnn", "vit")
    accepts = {"channels_last": "bool"}
    # Inductor caches compiled graphs on disk across processes: without this, a cell's first epoch
    # would include a full compile or almost none, depending on what ran before it.
    variant_env = {"compile": {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}}

    def build(self) -> None:
        self.torch_device = torch_device(self.device)
        set_threads(self.threads)
        use_full_float32()
        torch.manual_seed(self.seed)
        channels_last = self.options.get("channels_last", self.model.name == "cnn")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.feature_map = flattened_feature_map(self.model)
        self.links = LINKS[self.model.name](self.model) if self.model.name in LINKS else None
        self.net = NETWORKS[self.model.name](self.model)
        self.net.to(self.torch_device, memory_format=self.memory_format)
        trained = [p for p in self.net.parameters() if p.requires_grad]  # not the LSTM's b_hh, held at zero
        self.optimizer_state = make_optimizer(self.optimizer, trained)
        self.schedule = make_schedule(self.optimizer, self.optimizer_state)
        self.steps_done = 0
        self.train_step, self.eval_step = self._train_step, self._eval_step
        if self.variant == "compile":
            # Every adapter compiles afresh, as in a cell's own process: parity builds several in one, and
            # Dynamo's recompile limit would otherwise send the later ones back to eager without a word.
            torch._dynamo.reset()
            # Static shapes: one graph per batch size (the training batch, the eval chunk and its remainder).
            self.train_step = torch.compile(self._train_step, dynamic=False)
            self.eval_step = torch.compile(self._eval_step, dynamic=False)

    # -- parameters and data -------------------------------------------------------------------

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        state = self.net.state_dict()
        for name, shape in self.model.param_shapes.items():
            if np.shape(params[name]) != shape:
                raise ValueError(f"{name} has shape {np.shape(params[name])}, expected {shape}")
        with torch.no_grad():
            for name, value in self._torch_state(params).items():
                state[name].copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))

    def _torch_state(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Canonical parameters as PyTorch's state: name by name, or through the model's links."""
        if not self.links:
            return {torch_name(name): to_torch(name, np.asarray(params[name], np.float32), self.feature_map)
                    for name in self.model.param_shapes}
        state = {}
        for link in self.links:
            state.update(zip(link.torch, link.to_torch(*(np.asarray(params[name], np.float32)
                                                         for name in link.canonical))))
        return state

    def get_params(self) -> dict[str, np.ndarray]:
        state = {name: value.detach().cpu().numpy() for name, value in self.net.state_dict().items()}
        if self.links:
            found = {}
            for link in self.links:
                found.update(zip(link.canonical, link.to_canonical(*(state[name] for name in link.torch))))
        else:
            found = {name: to_canonical(name, state[torch_name(name)], self.feature_map)
                     for name in self.model.param_shapes}
        # copies: on the CPU, .numpy() shares the live parameter's memory
        return {name: np.array(found[name], order="C") for name in self.model.param_shapes}

    def load_data(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray) -> None:
        self.x_train, self.y_train = self._images(x_train), self._labels(y_train)
        self.x_eval, self.y_eval = self._images(x_eval), self._labels(y_eval)

    def _images(self, images: np.ndarray) -> torch.Tensor:
        """NHWC float32 -> NCHW on the device, once."""
        x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
        return x.to(self.torch_device, memory_format=self.memory_format)

    def _labels(self, labels: np.ndarray) -> torch.Tensor:
        """int64 class indices, what F.cross_entropy takes."""
        return torch.from_numpy(np.asarray(labels, np.int64)).to(self.torch_device)

    # -- training and evaluation ---------------------------------------------------------------

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.optimizer_state.zero_grad()
        loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        self.optimizer_state.step()
        return loss.detach()

    def _eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy and number of correct predictions of one chunk."""
        logits = self.net(x)
        return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(dim=1) == y).sum()

    def train_epoch(self, batches: np.ndarray) -> float:
        self.net.train()
        if self.optimizer.decays and not self.schedule:  # the epoch's rate (a call is one epoch or part of one)
            for group in self.optimizer_state.param_groups:
                group["lr"].fill_(self.optimizer.lr_at(self.steps_done))
        self.steps_done += len(batches)
        batches = torch.from_numpy(batches).to(self.torch_device, torch.int64)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.torch_device)
        for indices in batches:
            loss = self.train_step(self.x_train[indices], self.y_train[indices])
            if self.schedule:  # the per-step warm-up and cosine decay
                self.schedule.step()
            loss_sum += loss
            if self.sync_each_step:  # only the GPU check's contrast run: a read-back every step
                loss.item()
        self._sync()
        return loss_sum.item() / len(batches)  # one device -> host read per epoch

    def evaluate(self) -> tuple[float, float]:
        self.net.eval()
        with torch.no_grad():
            return super().evaluate()

    def eval_chunk(self, rows: slice):
        return self.eval_step(self.x_eval[rows], self.y_eval[rows])

    def _sync(self) -> None:
        """Wait for queued CUDA kernels, so the caller's timer measures the work (CPU ops are synchronous)."""
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    @property
    def backend(self) -> str:
        base = f"cuda {torch.version.cuda}" if self.torch_device.type == "cuda" else cpu_backend(self.model.name)
        return f"inductor ({base})" if self.variant == "compile" else base

    def thread_pools(self) -> str:
        threads = f"intra-op x{torch.get_num_threads()}, inter-op x{torch.get_num_interop_threads()}"
        return f"torch {threads} ({cpu_library() if self.torch_device.type == 'cpu' else 'cuda'})"

    def peak_device_memory_mb(self) -> float | None:
        if self.torch_device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.torch_device) / 2**20

    def device_memory_in_use_mb(self) -> float | None:
        return torch.cuda.memory_allocated(self.torch_device) / 2**20 if self.torch_device.type == "cuda" else None

    @staticmethod
    def matmul_probe(device: str, size: int, threads: int):
        """One float32 torch.mm into a preallocated result (MKL on x86 CPUs, cuBLAS on a GPU, no TF32)."""
        target = torch_device(device)
        set_threads(threads)
        use_full_float32()
        a, b = (torch.rand(size, size, device=target) for _ in range(2))
        c = torch.empty_like(a)

        def product() -> None:
            torch.mm(a, b, out=c)
            if target.type == "cuda":
                torch.cuda.synchronize(target)

        return product, f"cuda {torch.version.cuda} (cublas)" if target.type == "cuda" else cpu_library()

    @staticmethod
    def op_probe(device: str, operation: dict, threads: int):
        """One step operation as autograd runs it: torch.mm on nn.Linear's (out, in) weights (linear_operands),
        torch.bmm on (transposed) views; the convolution and its two gradients through ATen's convolution and
        convolution_backward (one gradient each), in channels_last."""
        from harness.execute.probes import operands

        target = torch_device(device)
        set_threads(threads)
        use_full_float32()
        given = {name: torch.from_numpy(value).to(target) for name, value in operands(operation).items()}
        role = operation["role"]
        if operation["kind"] == "matmul":
            a, b = linear_operands(role, given["a"], given["b"])
            out = torch.empty(a.shape[0], b.shape[1], device=target)
            work = lambda: torch.mm(a, b, out=out)  # noqa: E731
        elif operation["kind"] == "bmm":  # attention's products, one per sample and head
            a = given["a"].transpose(-1, -2) if role in FIRST_TRANSPOSED else given["a"]
            b = given["b"].transpose(-1, -2) if role in SECOND_TRANSPOSED else given["b"]
            out = torch.empty(*a.shape[:-1], b.shape[-1], device=target)
            work = lambda: torch.bmm(a, b, out=out)  # noqa: E731
        else:  # NHWC storage seen as NCHW is channels_last, as the adapter's CNN keeps its activations
            x, dy = given["x"].permute(0, 3, 1, 2), given["dy"].permute(0, 3, 1, 2)
            w = given["w"].permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
            mask = {"forward": None, "weight gradient": [False, True, False], "input gradient": [True, False, False]}
            if role == "forward":
                work = lambda: F.conv2d(x, w)  # noqa: E731
            else:
                work = lambda: torch.ops.aten.convolution_backward(  # noqa: E731
                    dy, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask[role])

        def run():
            with torch.no_grad():
                result = work()
            if target.type == "cuda":
                torch.cuda.synchronize(target)
            return result

        return run

    @staticmethod
    def op_result(operation: dict, result) -> np.ndarray:
        """A probe's result in the canonical layout: NCHW batches back to NHWC, OIHW kernels to HWIO."""
        if isinstance(result, tuple):  # convolution_backward: (input gradient, weight gradient, bias gradient)
            result = next(r for r in result if r is not None)
        if operation["kind"] == "matmul" and operation["role"] == "weight gradient":
            result = result.t()  # nn.Linear's (out, in) gradient
        if operation["kind"] == "conv":
            kernel = operation["role"] == "weight gradient"
            result = result.permute(2, 3, 1, 0) if kernel else result.permute(0, 2, 3, 1)
        return result.detach().cpu().numpy()

    @staticmethod
    def matmul_on_device(device: str, a: np.ndarray, b: np.ndarray):
        target = torch_device(device)
        use_full_float32()
        product = (torch.from_numpy(a).to(target) @ torch.from_numpy(b).to(target)).cpu().numpy()
        facts = {"precision_set": f"float32_matmul_precision={torch.get_float32_matmul_precision()}, "
                                  f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
                                  f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"}
        if target.type == "cuda":
            facts.update(cuda=torch.version.cuda, cudnn=str(torch.backends.cudnn.version()))
        return product, facts
