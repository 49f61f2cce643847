"""Input gradients whose transposed weights are packed by vector permutes with the rows of a
few output channels ahead prefetched (``kernels/cpu_conv.c``: pack_t_taps, PACK_T_AHEAD)
against the code before that change, 2 threads. The change is compiled in, so the two run
in alternating processes: a git worktree of the earlier commit (its own kernel cache) and
this tree, two rounds each; every process times the engine's input gradient interleaved
with PyTorch's, medians after a 20 ms untimed burst (as ``python -m engine.bench``), and
checks it against float64. Layers: batch-1 input gradients through the inline packer
(3x3 at 7x7 and 14x14, dilated, grouped 5x5, strided), and batch-8 ones through the
packing pass.
Run: python bench/results/scripts/pack_t_ab.py [BEFORE_COMMIT]   (default 5a4175b)
"""
import os
import subprocess
import sys
import tempfile

LAYERS = [  # (name, N, C, H, O, k, stride, padding, dilation, groups)
    ("ResNet layer4 3x3 b1", 1, 512, 7, 512, 3, 1, 1, 1, 1),
    ("VGG-16 conv5_1 b1", 1, 512, 14, 512, 3, 1, 1, 1, 1),
    ("ResNet layer3 3x3 b1", 1, 256, 14, 256, 3, 1, 1, 1, 1),
    ("DeepLab 3x3 d2 512@14 b1", 1, 512, 14, 512, 3, 1, 2, 2, 1),
    ("AlexNet conv2 5x5 g2 b1", 1, 96, 27, 256, 5, 1, 2, 1, 2),
    ("ResNet layer4 3x3/2 b1", 1, 256, 14, 512, 3, 2, 1, 1, 1),
    ("ResNet layer4 3x3 b8", 8, 512, 7, 512, 3, 1, 1, 1, 1),
    ("VGG CIFAR 256->512 4x4 b64", 64, 256, 4, 512, 3, 1, 1, 1, 1),
]

CHILD = r'''
import sys, json
# the checkout in ROOT must win over an editable install's import hook, which maps
# engine.backends and engine.kernels to the installed checkout whatever engine resolves to
# (before this line both sides ran the installed tree's kernels)
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import numpy as np, torch
sys.path.insert(0, SCRIPTS)
from _burst import interleaved_medians
from engine import ops
from engine.backends import native_calls
assert native_calls.__file__.startswith(ROOT), (native_calls.__file__, ROOT)
out = []
for name, n, c, h, o, k, s, p, d, g in LAYERS:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((o, c // g, k, k), dtype=np.float32)
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    gy = rng.standard_normal(ops.conv2d(x, w, **kw).shape, dtype=np.float32)
    xt, wt, gyt = map(torch.from_numpy, (x, w, gy))
    def eng():
        native_calls.warm()
        return ops.conv2d_backward(gy, x, w, need_weight_grad=False, has_bias=False, **kw)[0]
    def tor():
        native_calls.quiesce()
        return torch.ops.aten.convolution_backward(gyt, xt, wt, None, [s, s], [p, p], [d, d], False, [0, 0], g,
                                                   [True, False, False])[0]
    want = ops.conv2d_backward(gy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                               need_weight_grad=False, has_bias=False, **kw)[0]
    err = float(np.abs(eng() - want).max() / np.abs(want).max())
    m = interleaved_medians({"engine": eng, "torch": tor}, 3, 7)
    out.append((name, m["engine"], m["torch"], err))
print(json.dumps(out))
'''


def run(root, cache):
    env = dict(os.environ, PYTHONPATH=root, ENGINE_CACHE_DIR=cache)
    code = (f"SCRIPTS = {os.path.dirname(os.path.abspath(__file__))!r}\nLAYERS = {LAYERS!r}\nROOT = {root!r}\n"
            + CHILD)
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                            check=True)
    import json
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    before = sys.argv[1] if len(sys.argv) > 1 else "5a4175b"
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "before")
        subprocess.run(["git", "-C", here, "worktree", "add", "-q", "--detach", tree, before], check=True)
        try:
            rounds = {"before": [], "after": []}
            for _ in range(2):
                rounds["before"].append(run(tree, os.path.join(tmp, "cache-before")))
                rounds["after"].append(run(here, os.path.join(tmp, "cache-after")))
        finally:
            subprocess.run(["git", "-C", here, "worktree", "remove", "--force", tree], check=True)
    print(f"before = {before}, after = this tree; engine ms / PyTorch ms in the same process, two rounds")
    print(f"{'layer':28s} {'before r1':>17s} {'before r2':>17s} {'after r1':>17s} {'after r2':>17s} "
          f"{'after/before':>12s} {'max rel err':>11s}")
    for i, (name, *_rest) in enumerate(LAYERS):
        cells, mean = [], {}
        for label in ("before", "after"):
            for r in rounds[label]:
                cells.append(f"{r[i][1]:7.3f}/{r[i][2]:7.3f}")
            mean[label] = sum(r[i][1] for r in rounds[label]) / 2
        err = max(r[i][3] for label in rounds for r in rounds[label])
        print(f"{name:28s} {' '.join(f'{c:>17s}' for c in cells)} {mean['after'] / mean['before']:12.2f} {err:11.1e}",
              flush=True)


if __name__ == "__main__":
    main()
