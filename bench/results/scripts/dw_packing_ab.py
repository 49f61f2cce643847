"""Weight-gradient (input-gradient, forward) time of two commits, process against process:
rounds that run the old and the new checkout one after the other, each timing dW (dx, y) of
every shape (the bench's burst protocol) and PyTorch's in the same process, and hashing the bits.

    git worktree add --detach /tmp/wt-old OLD_COMMIT
    python bench/results/scripts/dw_packing_ab.py /tmp/wt-old [rounds] [dw|dx|fwd] [shapes]

The shapes: ``dw`` (the default for dw), ``strided`` (for dx), ``wino`` (3x3 stride-1
layers, most on Winograd's kernel; the default for fwd), ``pointwise`` (1x1 layers) or
``planar`` (forwards of one input channel a group: first layers and depthwise) or ``cv``
(17-64 channels a group: the channel-vector kernel's range) or ``dw_strided`` (strided
depthwise layers).

Prints, per shape, the medians over rounds of each side's median, new/old, new/PyTorch and
whether the bits are the same."""
import hashlib
import json
import os
import statistics
import subprocess
import sys

SHAPES = {  # N, C, H, O, k (or kh x kw), stride, pad
    "VGG CIFAR conv1 64x3x32->64 k3": (64, 3, 32, 64, (3, 3), 1, (1, 1)),
    "ResNet-20 down 128x32x16->64 k1/2": (128, 32, 16, 64, (1, 1), 2, (0, 0)),
    "ResNet layer2 down 8x64x56->128 k1/2": (8, 64, 56, 128, (1, 1), 2, (0, 0)),
    "ResNet stem 8x3x224->64 k7/2": (8, 3, 224, 64, (7, 7), 2, (3, 3)),
    "ResNet layer1 8x64x56->64 k3": (8, 64, 56, 64, (3, 3), 1, (1, 1)),
    "ResNet layer3 8x256x14->256 k3": (8, 256, 14, 256, (3, 3), 1, (1, 1)),
    "ResNet layer4 1x512x7->512 k3": (1, 512, 7, 512, (3, 3), 1, (1, 1)),
    "ResNet-50 64x1024x14->256 k1": (64, 1024, 14, 256, (1, 1), 1, (0, 0)),
    "Inception 8x128x17->192 k7x1": (8, 128, 17, 192, (7, 1), 1, (3, 0)),
    "LeNet-5 conv2 64x6x14->16 k5": (64, 6, 14, 16, (5, 5), 1, (0, 0)),
    "VGG-16 conv4_2 1x512x28->512 k3": (1, 512, 28, 512, (3, 3), 1, (1, 1)),
    "SimpleCNN conv2 128x32x14->64 k3": (128, 32, 14, 64, (3, 3), 1, (1, 1)),
    # batch 1, few pixels: threads share out dW's tiles (conv2d_dw_cols_f32); groups last
    "AlexNet conv2 g2 1x96x27->256 k5": (1, 96, 27, 256, (5, 5), 1, (2, 2), 2),
    "ResNet layer3 1x256x14->256 k3": (1, 256, 14, 256, (3, 3), 1, (1, 1)),
    "Inception 1x128x17->192 k7x1": (1, 128, 17, 192, (7, 1), 1, (3, 0)),
    "MobileNet 1x512x14->512 k1": (1, 512, 14, 512, (1, 1), 1, (0, 0)),
}
STRIDED = {  # the input gradient's shapes: strided layers (by phases) and a stride-1 control
    "ResNet-20 stage3 128x32x16->64 k3/2": (128, 32, 16, 64, (3, 3), 2, (1, 1)),
    "ResNet-20 down 128x32x16->64 k1/2": (128, 32, 16, 64, (1, 1), 2, (0, 0)),
    "ResNet layer2 8x64x56->128 k3/2": (8, 64, 56, 128, (3, 3), 2, (1, 1)),
    "ResNet layer2 down 8x64x56->128 k1/2": (8, 64, 56, 128, (1, 1), 2, (0, 0)),
    "ResNet layer4 8x256x14->512 k3/2": (8, 256, 14, 512, (3, 3), 2, (1, 1)),
    "course 64x8x14->16 k5/2": (64, 8, 14, 16, (5, 5), 2, (2, 2)),
    "AlexNet conv1 8x3x227->64 k11/4": (8, 3, 227, 64, (11, 11), 4, (2, 2)),
    "ResNet-20 stage2 128x16x32->32 k3/2": (128, 16, 32, 32, (3, 3), 2, (1, 1)),
    "ResNet layer3 8x256x14->256 k3": (8, 256, 14, 256, (3, 3), 1, (1, 1)),
}
WINO = {  # 3x3 stride 1: Winograd's layers where its cost model takes them, and two it declines
    "ResNet layer4 1x512x7->512 k3": (1, 512, 7, 512, (3, 3), 1, (1, 1)),
    "ResNet layer4 8x512x7->512 k3": (8, 512, 7, 512, (3, 3), 1, (1, 1)),
    "ResNet layer3 8x256x14->256 k3": (8, 256, 14, 256, (3, 3), 1, (1, 1)),
    "ResNet layer2 8x128x28->128 k3": (8, 128, 28, 128, (3, 3), 1, (1, 1)),
    "VGG-16 conv4_2 1x512x28->512 k3": (1, 512, 28, 512, (3, 3), 1, (1, 1)),
    "VGG-16 conv3_2 8x256x56->256 k3": (8, 256, 56, 256, (3, 3), 1, (1, 1)),
    "VGG CIFAR conv5 64x512x2->512 k3": (64, 512, 2, 512, (3, 3), 1, (1, 1)),
    "ResNet layer1 8x64x56->64 k3": (8, 64, 56, 64, (3, 3), 1, (1, 1)),
    "SimpleCNN conv2 128x32x14->64 k3": (128, 32, 14, 64, (3, 3), 1, (1, 1)),
}
POINTWISE = {  # 1x1 input gradients: one image (weights packed as the tiles go) and batch-8 controls
    "ResNet-50 1x512x7->2048 k1": (1, 512, 7, 2048, (1, 1), 1, (0, 0)),
    "ResNet-50 1x2048x7->512 k1": (1, 2048, 7, 512, (1, 1), 1, (0, 0)),
    "ResNet-50 1x1024x14->256 k1": (1, 1024, 14, 256, (1, 1), 1, (0, 0)),
    "MobileNet 1x512x14->512 k1": (1, 512, 14, 512, (1, 1), 1, (0, 0)),
    "ResNet layer3 down 1x128x28->256 k1/2": (1, 128, 28, 256, (1, 1), 2, (0, 0)),
    "ResNet-50 1x256x56->64 k1": (1, 256, 56, 64, (1, 1), 1, (0, 0)),
    "ResNet-50 8x512x7->2048 k1": (8, 512, 7, 2048, (1, 1), 1, (0, 0)),
}
PLANAR = {  # forwards of one input channel a group (kernels/cpu_depthwise.c), groups last
    "SimpleCNN conv1 1x1x28->32 k3": (1, 1, 28, 32, (3, 3), 1, (1, 1), 1),
    "LeNet-5 conv1 1x1x28->6 k5": (1, 1, 28, 6, (5, 5), 1, (2, 2), 1),
    "SimpleCNN conv1 64x1x28->32 k3": (64, 1, 28, 32, (3, 3), 1, (1, 1), 1),
    "MobileNet dw 1x32x112 k3": (1, 32, 112, 32, (3, 3), 1, (1, 1), 32),
    "MobileNet dw 8x128x56 k3": (8, 128, 56, 128, (3, 3), 1, (1, 1), 128),
    "EfficientNet dw 1x96x56 k5": (1, 96, 56, 96, (5, 5), 1, (2, 2), 96),
    "dw 8x32x56 k7": (8, 32, 56, 32, (7, 7), 1, (3, 3), 32),
}
CV = {  # 17-64 output channels a group (forward) or input channels (dx): conv2d_fwd_cv_f32's range;
    # groups, then dilation, last
    "Inception 5x5 8x48x35->64": (8, 48, 35, 64, (5, 5), 1, (2, 2)),
    "Inception 5x5 1x48x35->64": (1, 48, 35, 64, (5, 5), 1, (2, 2)),
    "AlexNet conv2 g2 1x96x27->256 k5": (1, 96, 27, 256, (5, 5), 1, (2, 2), 2),
    "AlexNet conv2 g2 8x96x27->256 k5": (8, 96, 27, 256, (5, 5), 1, (2, 2), 2),
    "5x5 32x16x32->32": (32, 16, 32, 32, (5, 5), 1, (2, 2)),
    "5x5 64x32x8->32": (64, 32, 8, 32, (5, 5), 1, (2, 2)),
    "5x5 16x64x14->64": (16, 64, 14, 64, (5, 5), 1, (2, 2)),
    "7x7 8x64x28->64": (8, 64, 28, 64, (7, 7), 1, (3, 3)),
    "1x7 8x64x17->64": (8, 64, 17, 64, (1, 7), 1, (0, 3)),
    "3x3 d2 64x32x32->32": (64, 32, 32, 32, (3, 3), 1, (2, 2), 1, 2),
    "3x3 d2 8x64x56->64": (8, 64, 56, 64, (3, 3), 1, (2, 2), 1, 2),
    "ResNet-20 3x3/2 1x32x16->64": (1, 32, 16, 64, (3, 3), 2, (1, 1)),
    "ResNet-20 3x3/2 128x16x32->32": (128, 16, 32, 32, (3, 3), 2, (1, 1)),
    "LeNet-5 conv2 64x6x14->16 k5": (64, 6, 14, 16, (5, 5), 1, (0, 0)),
}
DW_STRIDED = {  # strided depthwise layers (kernels/cpu_depthwise.c: phase planes), groups last
    "EfficientNet dw 5x5/2 8x144x56": (8, 144, 56, 144, (5, 5), 2, (2, 2), 144),
    "MobileNet dw 3x3/2 8x64x112": (8, 64, 112, 64, (3, 3), 2, (1, 1), 64),
    "MobileNet dw 3x3/2 1x128x56": (1, 128, 56, 128, (3, 3), 2, (1, 1), 128),
    "dw 3x3/2 32x32x32": (32, 32, 32, 32, (3, 3), 2, (1, 1), 32),
    "dw 7x7/2 8x96x56": (8, 96, 56, 96, (7, 7), 2, (3, 3), 96),
    "MobileNet dw 3x3 8x128x56 (stride 1)": (8, 128, 56, 128, (3, 3), 1, (1, 1), 128),
}
SETS = {"dw": SHAPES, "strided": STRIDED, "wino": WINO, "pointwise": POINTWISE, "planar": PLANAR, "cv": CV,
        "dw_strided": DW_STRIDED}
DEFAULT_SET = {"dw": "dw", "dx": "strided", "fwd": "wino"}

CHILD = r'''
import hashlib, json, sys
# the checkout given (sys.path[0]) must win over an editable install's import hook, which
# maps engine.backends to the installed checkout whatever engine itself resolves to
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from _burst import interleaved_medians
from engine import ops
from engine.backends import native_cpu as nc
from engine.backends.base import Window
torch.set_num_threads(2)
out = {}
for name, (n, c, h, o, (kh, kw), s, (ph, pw), *extra) in json.loads(sys.argv[2]).items():
    g, d = (list(extra) + [1, 1])[:2]
    oh, ow = (h + 2 * ph - d * (kh - 1) - 1) // s + 1, (h + 2 * pw - d * (kw - 1) - 1) // s + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    gy = rng.standard_normal((n, o, oh, ow), dtype=np.float32)
    win = Window(kh, kw, s, s, d, d, ph, ph, pw, pw, oh, ow)
    xt, gt, wt = torch.from_numpy(x), torch.from_numpy(gy), torch.empty(o, c // g, kh, kw)
    w = rng.standard_normal((o, c // g, kh, kw), dtype=np.float32)
    if sys.argv[4] == "fwd":
        wt = torch.from_numpy(w)
        ours = lambda: ops.conv2d(x, w, stride=s, padding=(ph, pw), dilation=d, groups=g)
        theirs = lambda: torch.nn.functional.conv2d(xt, wt, stride=s, padding=(ph, pw), dilation=d, groups=g)
    elif sys.argv[4] == "dx":
        wt = torch.from_numpy(w)
        ours = lambda: ops.conv2d_backward(gy, x, w, stride=s, padding=(ph, pw), dilation=d, groups=g,
                                           need_weight_grad=False,
                                           has_bias=False)[0]  # the NumPy path where the C one declines
    else:
        ours = lambda: nc.weight_grad(gy, x, (o, c // g, kh, kw), win, g)
    if sys.argv[4] != "fwd":
        mask = [sys.argv[4] == "dx", sys.argv[4] == "dw", False]
        theirs = lambda: torch.ops.aten.convolution_backward(gt, xt, wt, None, [s, s], [ph, pw], [d, d], False,
                                                              [0, 0], g, mask)
    m = interleaved_medians({"ours": ours, "torch": theirs}, 1.5, 7)
    out[name] = (m["ours"], m["torch"], hashlib.sha1(ours().tobytes()).hexdigest())
assert nc.__file__.startswith(sys.argv[3]), (nc.__file__, sys.argv[3])
print(json.dumps(out))
'''


def side(root, op, shapes):
    env = dict(os.environ, PYTHONPATH=root, ENGINE_CACHE_DIR=os.path.join("/tmp", "dwab-cache-" + hashlib.sha1(
        root.encode()).hexdigest()[:8]))
    scripts = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", CHILD, scripts, json.dumps(shapes), root, op], env=env, cwd=root,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{root}: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    old_root = sys.argv[1]
    new_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    op = sys.argv[3] if len(sys.argv) > 3 else "dw"
    shapes = SETS[sys.argv[4] if len(sys.argv) > 4 else DEFAULT_SET[op]]
    runs = {"old": [], "new": []}
    for _ in range(rounds):
        runs["old"].append(side(old_root, op, shapes))
        runs["new"].append(side(new_root, op, shapes))
    print(f"{'shape':40s} {'old ms':>8s} {'new ms':>8s} {'torch':>8s} {'new/old':>8s} {'new/torch':>9s} "
          f"{'old/torch':>9s} bits")
    for name in shapes:
        old = statistics.median(r[name][0] for r in runs["old"])
        new = statistics.median(r[name][0] for r in runs["new"])
        torch = statistics.median([r[name][1] for r in runs["old"]] + [r[name][1] for r in runs["new"]])
        tn = statistics.median(r[name][1] for r in runs["new"])
        to = statistics.median(r[name][1] for r in runs["old"])
        same = len({r[name][2] for side_runs in runs.values() for r in side_runs}) == 1
        print(f"{name:40s} {old:8.3f} {new:8.3f} {torch:8.3f} {new / old:8.2f} {new / tn:9.2f} {old / to:9.2f} "
              f"{'same' if same else 'DIFFER'}", flush=True)


if __name__ == "__main__":
    main()
