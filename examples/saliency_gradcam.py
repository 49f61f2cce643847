"""Saliency maps and Grad-CAM on a CNN trained on mnist5k, written to a PNG.

    python examples/saliency_gradcam.py                       # 2 epochs, 6 test digits, saliency_gradcam.png
    python examples/saliency_gradcam.py --images 8 --out maps.png

The model is the PyTorch tutorial's SimpleCNN, written the PyTorch way (a custom
``forward`` with ``F.relu``, ``x.view`` and one pooling module used twice). After
training, in eval mode:

* saliency: the gradient of the predicted class's score with respect to the
  input pixels (``x.requires_grad_()``, ``score.backward()``, ``x.grad``);
* Grad-CAM (Selvaraju et al., 2017): the last convolution's activations ``A``
  (a forward hook) and their gradient (``retain_grad()``), weighted per channel by
  the mean gradient, ``relu(sum_c mean(dA_c) * A_c)``, upsampled to 28x28.

Needs matplotlib for the figure (``pip install ".[plot]"``).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import engine  # noqa: E402
import engine.nn.functional as F  # noqa: E402
from engine import nn  # noqa: E402
from engine.data import DataLoader, load_dataset, train_val_split  # noqa: E402


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.25)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 64 * 7 * 7)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


def saliency(model, images):
    """``|d score / d pixel|`` of each image's predicted class, ``(N, 28, 28)``."""
    x = engine.tensor(images, requires_grad=True)
    scores = model(x)
    predicted = scores.argmax(dim=1)
    picked = scores[engine.arange(len(images)), predicted]  # one score per image
    picked.sum().backward()
    return engine.to_numpy(abs(engine.Tensor(x.grad)).amax(dim=1)), engine.to_numpy(predicted)


def grad_cam(model, images, layer):
    """Grad-CAM of each image's predicted class on ``layer``'s output, ``(N, H, W)``."""
    kept = {}
    handle = layer.register_forward_hook(lambda module, args, out: kept.update(activation=out))
    try:
        scores = model(engine.asarray(images))
    finally:
        handle.remove()
    activation = kept["activation"]
    activation.retain_grad()
    picked = scores[engine.arange(len(images)), scores.argmax(dim=1)]
    picked.sum().backward()
    weights = engine.Tensor(activation.grad).mean((2, 3), keepdim=True)  # .grad is a backend array
    with engine.no_grad():
        cam = F.relu((weights * activation).sum(1))
    return engine.to_numpy(cam)


def _upsample(maps, size):
    factor = size // maps.shape[-1]
    return np.repeat(np.repeat(maps, factor, axis=-2), factor, axis=-1)


def _normalised(maps):
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return maps / np.where(peak > 0, peak, 1)


def save_figure(path, images, labels, predicted, sal, cam):
    from matplotlib.figure import Figure
    n = len(images)
    fig = Figure(figsize=(6, 2 * n))
    for i in range(n):
        panels = [(images[i, 0], "gray", f"label {labels[i]}, predicted {predicted[i]}"),
                  (sal[i], "hot", "saliency |d score / d x|"), (None, None, "Grad-CAM on conv2")]
        for j, (img, cmap, title) in enumerate(panels):
            ax = fig.add_subplot(n, 3, 3 * i + j + 1)
            if img is None:
                ax.imshow(images[i, 0], cmap="gray")
                ax.imshow(cam[i], cmap="jet", alpha=0.45)
            else:
                ax.imshow(img, cmap=cmap)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--images", type=int, default=6, help="test digits to explain (default: %(default)s)")
    p.add_argument("--out", default="saliency_gradcam.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="numpy")
    args = p.parse_args(argv)
    engine.set_backend(args.backend)
    engine.manual_seed(args.seed)

    train, val = train_val_split(load_dataset("mnist5k"), 0.1, seed=args.seed)
    test = load_dataset("mnist5k", "test")
    model = SimpleCNN()
    engine.fit(model, nn.CrossEntropyLoss(), engine.optim.Adam(model.parameters(), lr=1e-3),
               DataLoader(train, 64, shuffle=True), DataLoader(val, 256), epochs=args.epochs, progress=False)
    accuracy = engine.evaluate(model, DataLoader(test, 256))["accuracy"]

    model.eval()  # dropout off; gradients still flow
    x, y = next(iter(DataLoader(test, args.images)))  # the first test digits, normalised as in training
    images, labels = engine.to_numpy(x), engine.to_numpy(y)
    sal, predicted = saliency(model, images)
    cam = _normalised(_upsample(grad_cam(model, images, model.conv2), images.shape[-1]))
    sal = _normalised(sal)
    on_digit = np.asarray(test.images[:args.images])[:, 0] > 64  # pixels of the strokes (0-255 images)
    share = float((sal * on_digit).sum() / sal.sum())
    print(f"test accuracy {accuracy:.2%}; {on_digit.mean():.0%} of the pixels are strokes and hold "
          f"{share:.0%} of the saliency")
    save_figure(args.out, images, labels, predicted, sal, cam)
    print(f"wrote {args.out}")
    return {"accuracy": accuracy, "saliency_on_digit": share, "predicted": predicted, "labels": labels}


if __name__ == "__main__":
    main()
