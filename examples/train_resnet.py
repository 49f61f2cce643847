"""Train a small ResNet-style network on mnist5k (or Fashion-MNIST) and report accuracy.

    python examples/train_resnet.py                      # 5 epochs on mnist5k, numpy backend
    python examples/train_resnet.py --epochs 2 --width 8 --backend numpy
    python examples/train_resnet.py --dataset fashion-mnist --train-limit 10000

The network is not a straight chain: every BasicBlock adds its input (or a
1x1-conv projection of it) to the output of two 3x3 conv + BatchNorm layers,
and backward sums the gradients of the two paths where they meet.

    stem:   Conv2d(1, w, 3, padding=1) - BatchNorm2d - ReLU          28x28
    stage1: BasicBlock(w, w)                                          28x28
    stage2: BasicBlock(w, 2w, stride=2)   (projection shortcut)       14x14
    stage3: BasicBlock(2w, 4w, stride=2)  (projection shortcut)        7x7
    head:   AdaptiveAvgPool2d(1) - Flatten - Linear(4w, 10)

Evaluation runs in eval mode, so BatchNorm uses its running statistics.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import engine  # noqa: E402
from engine import nn  # noqa: E402
from engine.data import DataLoader, load_dataset  # noqa: E402


def small_resnet(width: int = 16, num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    w = width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.BasicBlock(w, w),
        nn.BasicBlock(w, 2 * w, stride=2),
        nn.BasicBlock(2 * w, 4 * w, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )


@engine.no_grad()
def evaluate(model, loader) -> tuple[float, float]:
    """``(mean loss, accuracy)`` in eval mode, recording nothing for backward."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        logits = model(x)
        total_loss += float(loss_fn(logits, y))
        correct += int((logits.argmax(dim=1) == y).sum())
        count += int(y.shape[0])
    model.train()
    return total_loss / count, correct / count


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="mnist5k", help="mnist5k (shipped), mnist or fashion-mnist")
    p.add_argument("--backend", default="numpy", help="numpy, cupy or array_api_strict (slow)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2, help="peak Adam learning rate (cosine decay)")
    p.add_argument("--width", type=int, default=16, help="channels of the first stage")
    p.add_argument("--train-limit", type=int, default=None, help="use only this many training images")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on only this many test images")
    p.add_argument("--summary", action="store_true", help="print the per-layer summary table first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    engine.set_backend(args.backend)
    engine.manual_seed(args.seed)
    train = load_dataset(args.dataset, "train")
    test = load_dataset(args.dataset, "test")
    if args.train_limit:
        train = train.subset(np.random.default_rng(args.seed).permutation(len(train))[:args.train_limit])
    if args.test_limit:
        test = test.subset(np.random.default_rng(args.seed + 1).permutation(len(test))[:args.test_limit])
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    test_loader = DataLoader(test, batch_size=256)

    model = small_resnet(args.width, num_classes=len(train.classes), in_channels=train.image_shape[0])
    if args.summary:
        print(model.summary(train.image_shape))
    loss_fn = nn.CrossEntropyLoss()
    opt = engine.optim.Adam(model.parameters(), lr=args.lr)
    steps, step = args.epochs * len(train_loader), 0
    print(f"{args.dataset}: {len(train)} train / {len(test)} test images; backend {args.backend}; "
          f"{model.num_parameters():,} parameters; {args.epochs} epochs of {len(train_loader)} batches")

    _, acc0 = evaluate(model, test_loader)
    print(f"epoch 0: test acc {acc0:.4f} (untrained)")
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        seen, correct, total_loss = 0, 0, 0.0
        for x, y in train_loader:
            for group in opt.param_groups:  # cosine decay of the learning rate over all steps
                group["lr"] = 0.5 * args.lr * (1 + np.cos(np.pi * step / steps))
            opt.zero_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            step += 1
            n = int(y.shape[0])
            seen += n
            total_loss += float(loss) * n
            correct += int((logits.argmax(dim=1) == y).sum())
        elapsed = time.perf_counter() - t0
        test_loss, test_acc = evaluate(model, test_loader)
        print(f"epoch {epoch}: train loss {total_loss / seen:.4f} acc {correct / seen:.4f} | "
              f"test loss {test_loss:.4f} acc {test_acc:.4f} | {elapsed:.1f} s")
    return test_acc


if __name__ == "__main__":
    main()
