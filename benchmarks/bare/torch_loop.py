"""A plain PyTorch loop: nn.Sequential, fused torch.optim.Adam, zero_grad / forward / backward / step.

The CNN runs in channels_last memory format, as PyTorch's CPU performance guide advises.
"""

import torch
import torch.nn.functional as F
from common import EpochTimer, flattened_side, kernels, setup
from torch import nn


def mlp(job) -> nn.Sequential:
    sizes = [784, *job["hidden"]]
    layers = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Dropout(job["dropout"]), nn.Linear(sizes[-1], 10))


def cnn(job) -> nn.Sequential:
    channels, layers = [1, *job["channels"]], []
    for a, b, k in zip(channels, channels[1:], kernels(job)):
        layers += [nn.Conv2d(a, b, k), nn.ReLU(), nn.MaxPool2d(2)]
    side = flattened_side(job)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(side * side * channels[-1], job["dense"]), nn.ReLU(),
                         nn.Dropout(job["dropout"]), nn.Linear(job["dense"], 10))


def main() -> None:
    job, data, epochs = setup()
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if job["device"] == "gpu" else "cpu")
    model = (mlp if job["model"] == "mlp" else cnn)(job).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=job["lr"], fused=True)
    x = torch.from_numpy(data.x_train).permute(0, 3, 1, 2).to(device)
    if job["model"] == "cnn" and job["options"].get("channels_last", True):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(data.y_train).long().to(device)

    def step(images, labels):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    if job["variant"] == "compile":
        step = torch.compile(step)
    model.train()
    for batches in epochs:
        with EpochTimer():
            for indices in torch.from_numpy(batches).long().to(device):
                step(x[indices], y[indices])
            if device.type == "cuda":
                torch.cuda.synchronize()


if __name__ == "__main__":
    main()
