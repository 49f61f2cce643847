"""Train a small Inception-style network (branches joined by ``engine.cat``) on mnist5k.

    python examples/train_inception.py                 # 3 epochs, numpy backend
    python examples/train_inception.py --epochs 1 --width 8 --train-limit 2000

Each Inception block runs four branches on the same input (a 1x1 convolution;
1x1 then 3x3; 1x1 then two 3x3, a 5x5 receptive field; 3x3 max pooling then
1x1) and concatenates their outputs along the channels. The model is a custom
``Module`` whose ``forward`` calls the branches and ``engine.cat``; the autograd
tape sends each branch its slice of the gradient and sums what meets at the
block's input. Training and evaluation use ``engine.fit`` / ``engine.evaluate``.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import engine  # noqa: E402
import engine.nn.functional as F  # noqa: E402
from engine import nn  # noqa: E402
from engine.data import DataLoader, load_dataset, train_val_split  # noqa: E402


class Inception(nn.Module):
    """Four branches, concatenated: ``b1 + b3 + b5 + pool`` output channels."""

    def __init__(self, in_channels, b1, b3, b5, pool):
        super().__init__()
        self.branch1 = nn.Conv2d(in_channels, b1, 1)
        self.branch3 = nn.Sequential(nn.Conv2d(in_channels, b3, 1), nn.ReLU(), nn.Conv2d(b3, b3, 3, padding=1))
        self.branch5 = nn.Sequential(nn.Conv2d(in_channels, b5, 1), nn.ReLU(), nn.Conv2d(b5, b5, 3, padding=1),
                                     nn.ReLU(), nn.Conv2d(b5, b5, 3, padding=1))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(in_channels, pool, 1))
        self.bn = nn.BatchNorm2d(b1 + b3 + b5 + pool)

    def forward(self, x):
        branches = [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)]
        return F.relu(self.bn(engine.cat(branches, dim=1)))


class InceptionNet(nn.Module):
    def __init__(self, width=8, num_classes=10):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(1, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.block1 = Inception(2 * w, w, w, w // 2, w // 2)           # 3w channels, 28x28
        self.block2 = Inception(3 * w, 2 * w, 2 * w, w, w)             # 6w channels, 14x14
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(6 * w, num_classes)

    def forward(self, x):
        x = self.pool(self.block1(self.stem(x)))
        x = self.block2(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numpy")
    args = p.parse_args(argv)
    engine.set_backend(args.backend)
    engine.manual_seed(args.seed)
    data = load_dataset("mnist5k")
    if args.train_limit:
        data = data.subset(range(args.train_limit)) if hasattr(data, "subset") else data
    train, val = train_val_split(data, 0.1, seed=args.seed)
    test = load_dataset("mnist5k", "test")
    model = InceptionNet(args.width)
    print(model.summary((1, 28, 28)))
    opt = engine.optim.Adam(model.parameters(), lr=args.lr)
    engine.fit(model, nn.CrossEntropyLoss(), opt, DataLoader(train, args.batch_size, shuffle=True),
               DataLoader(val, 256), epochs=args.epochs)
    accuracy = engine.evaluate(model, DataLoader(test, 256))["accuracy"]
    print(f"test accuracy {accuracy:.2%} ({len(test)} held-out mnist5k images)")
    return accuracy


if __name__ == "__main__":
    main()
