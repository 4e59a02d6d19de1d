"""The PyTorch peers of scripts/bench.py: each jaxcnn model as the same network in PyTorch eager.

  seed_net    the seed's CIFAR-10 CNN, as the seed wrote it (Adam 1e-3)
  resnet20    He et al. 2016's CIFAR ResNet-20 with option-A shortcuts (stride-2 subsample and
              zero channel padding), SGD with Nesterov momentum, label smoothing 0.1
  resnet18    the CIFAR ResNet-18 (3x3 stem, 1x1 projection shortcuts), same optimizer
  airbench    airbench94's network (2x2 whitening conv, three conv groups with BatchNorm and
              GELU, global max pool, linear head x 1/9), Nesterov SGD, label smoothing 0.2

Inputs are normalised NCHW float tensors already in memory: a DataLoader is left out, so
neither side pays for loading.
"""

import numpy as np


def device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def seed_net(num_classes: int = 10):
    """The seed's network, as it wrote it."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.fc1 = nn.Linear(64 * 8 * 8, 1024)
            self.fc2 = nn.Linear(1024, num_classes)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 64 * 8 * 8)
            x = F.relu(self.fc1(x))
            return self.fc2(x)

    return Net()


def resnet(stage_sizes, widths, shortcut: str, num_classes: int = 10):
    """CIFAR ResNets: 3x3 stem, stages of basic blocks, global average pool, linear head."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, cout - cin
            self.proj = None
            if (stride != 1 or cin != cout) and shortcut == "projection":
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            if self.proj is not None:
                x = self.proj(x)
            elif self.stride != 1 or self.pad:  # option A: subsample, zero-pad the channels
                x = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.pad))
            return F.relu(x + y)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(widths[0]), nn.ReLU())
            blocks, cin = [], widths[0]
            for i, (n, cout) in enumerate(zip(stage_sizes, widths, strict=True)):
                for j in range(n):
                    blocks.append(Block(cin, cout, 2 if (i > 0 and j == 0) else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, num_classes)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    return ResNet()


def airbench_net(widths=(64, 256, 256), num_classes: int = 10):
    """airbench94's network in float32 (its whitening kernel is left at its init: the speed of
    a step does not depend on it)."""
    import torch.nn as nn

    def norm(c):  # airbench's BatchNorm: the scale frozen at 1, only the bias learns
        bn = nn.BatchNorm2d(c, momentum=0.4, eps=1e-12)
        bn.weight.requires_grad_(False)
        return bn

    def group(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), norm(cout),
            nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), norm(cout), nn.GELU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
            self.whiten.weight.requires_grad_(False)
            self.body = nn.Sequential(nn.GELU(), group(24, widths[0]), group(widths[0], widths[1]),
                                      group(widths[1], widths[2]), nn.MaxPool2d(3))
            self.head = nn.Linear(widths[2], num_classes, bias=False)

        def forward(self, x):
            return self.head(self.body(self.whiten(x)).flatten(1)) / 9

    return Net()


# name -> (network, optimizer, label smoothing): the recipe of the matching jaxcnn config
RECIPES = {
    "cnn": (seed_net, lambda p: _adam(p, 1e-3), 0.0),
    "resnet20": (lambda: resnet((3, 3, 3), (16, 32, 64), "zero_pad"),
                 lambda p: _sgd(p, 0.2, 0.9, 5e-4), 0.1),
    "resnet18": (lambda: resnet((2, 2, 2, 2), (64, 128, 256, 512), "projection"),
                 lambda p: _sgd(p, 0.2, 0.9, 5e-4), 0.1),
    "airbench": (airbench_net, lambda p: _sgd(p, 1.5, 0.85, 5e-4), 0.2),
}


def _adam(params, lr):
    import torch
    return torch.optim.Adam(params, lr=lr)


def _sgd(params, lr, momentum, weight_decay):
    import torch
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True,
                           weight_decay=weight_decay)


def batches(images_NxHxWxC: np.ndarray, labels_N: np.ndarray, batch_size: int,
            pool: int = 4096):
    """Normalised NCHW float batches (mean/std 0.5), made once, up front: views of one pool."""
    import torch
    n = max(pool // batch_size, 1) * batch_size
    x_NxHxWxC = images_NxHxWxC[:n].astype(np.float32) / 255.0
    x_NxCxHxW = torch.from_numpy(((x_NxHxWxC - 0.5) / 0.5).transpose(0, 3, 1, 2).copy())
    y_N = torch.from_numpy(labels_N[:n].astype(np.int64))
    x_NxCxHxW, y_N = x_NxCxHxW.to(device()), y_N.to(device())
    return [(x_NxCxHxW[i:i + batch_size], y_N[i:i + batch_size])
            for i in range(0, n, batch_size)]


def copy_cnn_params(net, params) -> None:
    """Load a jaxcnn `cnn`'s parameters (an nnx.State, or nested dicts of arrays) into `net`,
    the seed's network: the same function of the input, so both can start from one init.

    Kernels go HWIO -> OIHW and (in, out) -> (out, in); fc1's input rows are reordered from
    jaxcnn's NHWC flatten order (h, w, c) to PyTorch's NCHW one (c, h, w).
    """
    import torch

    def arr(layer, name):
        v = params[layer][name]
        return np.asarray(getattr(v, "value", v))

    c = net.conv2.out_channels
    hw = int(round((net.fc1.in_features // c) ** 0.5))
    fc1 = arr("fc1", "kernel").reshape(hw, hw, c, -1).transpose(3, 2, 0, 1).reshape(
        -1, net.fc1.in_features)
    weights = {"conv1.weight": arr("conv1", "kernel").transpose(3, 2, 0, 1),
               "conv2.weight": arr("conv2", "kernel").transpose(3, 2, 0, 1),
               "fc1.weight": fc1, "fc2.weight": arr("fc2", "kernel").T}
    for layer in ("conv1", "conv2", "fc1", "fc2"):
        weights[f"{layer}.bias"] = arr(layer, "bias")
    # load_state_dict copies into the parameters' dtype: a float64 net gets every digit.
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
