"""The rest of the CNN toolbox: transposed conv, 1-D conv and pooling, adaptive
average pooling, batch norm, residual blocks.

Every op is checked against a naive-loop reference, against PyTorch (forward
and backward; float64 tight, float32 loose), with float64 finite differences,
and on every backend (the ``backend`` fixture: numpy, array_api_strict, and
cupy where there is a GPU), which doubles as the numpy/array_api_strict parity
check.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

from engine import backends
import engine
from engine import ops
from engine import nn

from _helpers import forward_backward
from conftest import assert_close

torch = pytest.importorskip("torch")  # the outside oracle: pip install "torch==2.13.0"
tF = torch.nn.functional


# --------------------------------------------------------------------------- helpers
def E(a, dtype="float64"):
    """A NumPy array on the active backend."""
    return engine.asarray(np.asarray(a), dtype=dtype)


def T(a):
    return torch.tensor(np.asarray(a), requires_grad=True)


def N(a):
    return engine.to_numpy(a)


def fd_check(loss, arrays, grads, eps=1e-6, tol=1e-6):
    """Central differences of the scalar ``loss()`` for every element of each
    (float64, host) array in ``arrays``, compared with ``grads``."""
    for name, (arr, grad) in enumerate(zip(arrays, grads)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            num[idx] = (up - down) / (2 * eps)
        scale = max(1.0, float(np.max(np.abs(num))))
        np.testing.assert_allclose(np.asarray(grad), num, rtol=0, atol=tol * scale,
                                   err_msg=f"gradient of argument {name}")


# --------------------------------------------------------------------------- naive references
def naive_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """Scatter every input pixel through the kernel: the textbook definition."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    cig = cin // groups
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    full = np.zeros((n, cog * groups, (h - 1) * sh + dh * (kh - 1) + 1 + oph,
                     (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
    for g in range(groups):
        for ci in range(cig):
            for co in range(cog):
                for i in range(kh):
                    for j in range(kw):
                        for hh in range(h):
                            for ww in range(wd):
                                full[:, g * cog + co, hh * sh + i * dh, ww * sw + j * dw] += (
                                    x[:, g * cig + ci, hh, ww] * w[g * cig + ci, co, i, j])
    y = full[:, :, ph:ph + oh, pw:pw + ow]
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def naive_conv1d(x, w, b, stride, padding, dilation, groups):
    n, c, length = x.shape
    o, cg, k = w.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), padding))
    ol = (length + sum(padding) - dilation * (k - 1) - 1) // stride + 1
    og = o // groups
    y = np.zeros((n, o, ol))
    for nn_ in range(n):
        for oc in range(o):
            g = oc // og
            for t in range(ol):
                for ci in range(cg):
                    for kk in range(k):
                        y[nn_, oc, t] += xp_[nn_, g * cg + ci, t * stride + kk * dilation] * w[oc, ci, kk]
    return y if b is None else y + b.reshape(1, -1, 1)


def naive_adaptive_avg_pool2d(x, oh, ow):
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
            c0, c1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def naive_pool1d(x, k, s, p, d, ceil_mode, kind, count_include_pad=True):
    n, c, length = x.shape
    span = length + 2 * p - d * (k - 1) - 1
    ol = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (ol - 1) * s >= length + p:
        ol -= 1
    y = np.zeros((n, c, ol))
    for t in range(ol):
        pos = [t * s - p + i * d for i in range(k)]
        inside = [q for q in pos if 0 <= q < length]
        if kind == "max":
            y[:, :, t] = x[:, :, inside].max(axis=2)
        else:
            end = min(t * s - p + k, length + p)
            count = (end - (t * s - p)) if count_include_pad else len(inside)
            y[:, :, t] = x[:, :, inside].sum(axis=2) / count
    return y


# --------------------------------------------------------------------------- conv_transpose2d
# (stride, padding, output_padding, groups, dilation, kernel, in/out channels per group, H, W)
CT_CASES = [
    ((1, 1), (0, 0), (0, 0), 1, (1, 1), (3, 3), (2, 3), 5, 4),
    ((2, 2), (1, 1), (1, 1), 1, (1, 1), (3, 3), (2, 2), 4, 5),
    ((2, 3), (0, 1), (1, 2), 2, (1, 1), (2, 3), (2, 1), 3, 4),
    ((1, 2), (1, 0), (0, 1), 1, (2, 3), (3, 2), (1, 2), 4, 3),
    ((3, 1), (2, 0), (2, 0), 3, (2, 1), (3, 1), (1, 2), 3, 5),   # non-square everything, groups=3
    ((1, 1), (0, 0), (0, 0), 2, (1, 1), (1, 1), (3, 2), 4, 4),   # 1x1: the plain GEMM path
    ((2, 2), (0, 0), (1, 0), 1, (1, 1), (1, 1), (2, 2), 3, 3),   # 1x1 with stride: col2im path
    ((1, 1), (0, 0), (1, 1), 1, (2, 2), (2, 2), (2, 2), 3, 3),   # output_padding < dilation only
]


def _ct_inputs(rng, case, batch=2):
    stride, padding, out_pad, groups, dilation, kernel, (cig, cog), h, w = case
    x = rng.standard_normal((batch, cig * groups, h, w))
    weight = rng.standard_normal((cig * groups, cog) + kernel)
    bias = rng.standard_normal(cog * groups)
    return x, weight, bias, dict(stride=stride, padding=padding, output_padding=out_pad, groups=groups,
                                 dilation=dilation)


@pytest.mark.parametrize("case", CT_CASES)
def test_conv_transpose2d_matches_naive_reference(backend, rng, case):
    x, w, b, kw = _ct_inputs(rng, case)
    y = ops.conv_transpose2d(E(x), E(w), E(b), **kw)
    ref = naive_conv_transpose2d(x, w, b, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                                 kw["dilation"])
    assert_close(y, ref, rtol=1e-12, backend=backend)
    # the output size formula
    for axis in (0, 1):
        k, s, p, op, d = (case[5][axis], kw["stride"][axis], kw["padding"][axis], kw["output_padding"][axis],
                          kw["dilation"][axis])
        assert y.shape[2 + axis] == ops.conv_transpose_output_size(x.shape[2 + axis], k, s, p, op, d)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("case", CT_CASES)
def test_conv_transpose2d_matches_torch_forward_backward(backend, rng, case, dtype, tol):
    x, w, b, kw = _ct_inputs(rng, case)
    tx, tw, tb = T(x.astype(dtype)), T(w.astype(dtype)), T(b.astype(dtype))
    ty = tF.conv_transpose2d(tx, tw, tb, **kw)
    g = rng.standard_normal(tuple(ty.shape)).astype(dtype)
    ty.backward(torch.tensor(g))
    y = ops.conv_transpose2d(E(x, dtype), E(w, dtype), E(b, dtype), **kw)
    dx, dw, db = ops.conv_transpose2d_backward(E(g, dtype), E(x, dtype), E(w, dtype), **kw)
    assert_close(y, ty.detach().numpy(), rtol=tol, backend=backend)
    assert_close(dx, tx.grad.numpy(), rtol=tol, backend=backend)
    assert_close(dw, tw.grad.numpy(), rtol=tol, backend=backend)
    assert_close(db, tb.grad.numpy(), rtol=tol, backend=backend)


@pytest.mark.parametrize("case", [c for c in CT_CASES if all(op < s for op, s in zip(c[2], c[0]))])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(backend, rng, case):
    """<conv2d(z, W), y> = <z, conv_transpose2d(y, W)> for the same W, stride, padding, dilation, groups."""
    y_np, w, _, kw = _ct_inputs(rng, case)
    conv_kw = {k: v for k, v in kw.items() if k != "output_padding"}
    out = ops.conv_transpose2d(E(y_np), E(w), **kw)          # (N, C_out, OH, OW)
    z = rng.standard_normal(tuple(out.shape))
    conv = ops.conv2d(E(z), E(w), **conv_kw)                  # back to (N, C_in, H, W)
    assert tuple(conv.shape) == y_np.shape
    lhs = float(np.sum(N(conv) * y_np))
    rhs = float(np.sum(z * N(out)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("case", [CT_CASES[1], CT_CASES[4], CT_CASES[5], CT_CASES[7]])
def test_conv_transpose2d_finite_differences(rng, case):
    x, w, b, kw = _ct_inputs(rng, case, batch=1)
    g = rng.standard_normal(tuple(ops.conv_transpose2d(E(x), E(w), **kw).shape))
    loss = lambda: float(np.sum(N(ops.conv_transpose2d(E(x), E(w), E(b), **kw)) * g))  # noqa: E731
    dx, dw, db = ops.conv_transpose2d_backward(E(g), E(x), E(w), **kw)
    fd_check(loss, [x, w, b], [N(dx), N(dw), N(db)])


def test_conv_transpose2d_non_contiguous_input_and_no_input_grad(rng):
    x, w, b, kw = _ct_inputs(rng, CT_CASES[2])
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values, F-ordered planes
    assert not xt.flags.c_contiguous
    ref = naive_conv_transpose2d(x, w, b, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                                 kw["dilation"])
    assert_close(ops.conv_transpose2d(xt, w, b, **kw), ref, rtol=1e-12)
    g = rng.standard_normal(ref.shape)
    dx, dw, db = ops.conv_transpose2d_backward(g, xt, w, need_input_grad=False, has_bias=False, **kw)
    assert dx is None and db is None
    assert_close(dw, ops.conv_transpose2d_backward(g, x, w, **kw)[1], rtol=1e-12)


def test_conv_transpose2d_errors(rng):
    x, w = E(rng.standard_normal((1, 4, 3, 3))), E(rng.standard_normal((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="output_padding.*smaller than the stride"):
        ops.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="input has 3 channels, expected 4"):
        ops.conv_transpose2d(E(rng.standard_normal((1, 3, 3, 3))), w)
    with pytest.raises(ValueError, match="string paddings"):
        ops.conv_transpose2d(x, w, padding="same")
    with pytest.raises(ValueError, match="not divisible by groups=3"):
        ops.conv_transpose2d(x, w, groups=3)
    with pytest.raises(ValueError, match="reduce the padding"):
        ops.conv_transpose2d(x, E(rng.standard_normal((4, 2, 1, 1))), padding=2)
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(4, 2\).*output_padding"):
        nn.ConvTranspose2d(4, 2, 3, stride=1, output_padding=1)


# --------------------------------------------------------------------------- layers vs torch
def _load_from_torch(module, tmodule):
    module.load_state_dict({k: v.detach().numpy() for k, v in tmodule.state_dict().items()})


def _check_layer_vs_torch(backend, rng, module, tmodule, x, tol=1e-12, **fwd_kwargs):
    """Same weights; forward, input gradient and parameter gradients against PyTorch."""
    assert list(module.state_dict()) == list(tmodule.state_dict())
    module.to("float64")
    _load_from_torch(module, tmodule)
    tx = T(x)
    ty = tmodule(tx, **fwd_kwargs)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y, dx = forward_backward(module, E(x), E(g), **fwd_kwargs)
    assert_close(y, ty.detach().numpy(), rtol=tol, backend=backend)
    assert_close(dx, tx.grad.numpy(), rtol=tol, backend=backend)
    tparams = dict(tmodule.named_parameters())
    for name, p in module.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), rtol=tol, err_msg=name)


@pytest.mark.parametrize("kwargs,size", [
    (dict(stride=2, padding=1, output_padding=1), (5, 4)),
    (dict(stride=(1, 2), padding=(0, 1), groups=2, dilation=(2, 1), bias=False), (4, 3)),
])
def test_conv_transpose2d_layer_matches_torch(backend, rng, kwargs, size):
    engine.manual_seed(0)
    module = nn.ConvTranspose2d(4, 6, (3, 2), **kwargs)
    tmodule = torch.nn.ConvTranspose2d(4, 6, (3, 2), **kwargs).double()
    assert tuple(module.weight.shape) == tuple(tmodule.weight.shape)
    _check_layer_vs_torch(backend, rng, module, tmodule, rng.standard_normal((2, 4) + size))


def test_conv_transpose2d_layer_output_size(rng):
    module = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    tmodule = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1).double()
    _load_from_torch(module, tmodule)
    x = rng.standard_normal((1, 2, 4, 5))
    y, dx = forward_backward(module, E(x), E(np.ones((1, 3, 8, 10))), output_size=(8, 10))
    assert tuple(y.shape) == (1, 3, 8, 10)
    assert_close(y, tmodule(torch.tensor(x), output_size=[8, 10]).detach().numpy(), rtol=1e-12)
    assert tuple(dx.shape) == x.shape
    with pytest.raises(ValueError, match="output_size"):
        module(E(x), output_size=(9, 12))


def test_conv_transpose1d_layer_matches_torch(backend, rng):
    module = nn.ConvTranspose1d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
    tmodule = torch.nn.ConvTranspose1d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2).double()
    _check_layer_vs_torch(backend, rng, module, tmodule, rng.standard_normal((2, 2, 5)))


# --------------------------------------------------------------------------- 1-D convolution
CONV1D_CASES = [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=2, dilation=1, groups=1),
    dict(stride=1, padding="same", dilation=2, groups=2),
    dict(stride=3, padding=1, dilation=2, groups=4),    # depthwise
    dict(stride=1, padding="valid", dilation=1, groups=1),
]


@pytest.mark.parametrize("kw", CONV1D_CASES)
def test_conv1d_matches_naive_and_torch(backend, rng, kw):
    x = rng.standard_normal((2, 4, 11))
    w = rng.standard_normal((8, 4 // kw["groups"], 3))
    b = rng.standard_normal(8)
    tx, tw, tb = T(x), T(w), T(b)
    ty = tF.conv1d(tx, tw, tb, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = ops.conv1d(E(x), E(w), E(b), **kw)
    assert_close(y, ty.detach().numpy(), rtol=1e-12, backend=backend)
    if not isinstance(kw["padding"], str):
        ref = naive_conv1d(x, w, b, kw["stride"], (kw["padding"],) * 2, kw["dilation"], kw["groups"])
        assert_close(y, ref, rtol=1e-12)
    dx, dw, db = ops.conv1d_backward(E(g), E(x), E(w), **kw)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12, backend=backend)
    assert_close(dw, tw.grad.numpy(), rtol=1e-12)
    assert_close(db, tb.grad.numpy(), rtol=1e-12)


def test_conv1d_float32_and_finite_differences(rng):
    kw = dict(stride=2, padding=1, dilation=2, groups=2)
    x, w, b = rng.standard_normal((1, 2, 7)), rng.standard_normal((4, 1, 3)), rng.standard_normal(4)
    y32 = ops.conv1d(E(x, "float32"), E(w, "float32"), E(b, "float32"), **kw)
    assert_close(y32, tF.conv1d(*(torch.tensor(a, dtype=torch.float32) for a in (x, w, b)), **kw).numpy(),
                 rtol=1e-5)
    g = rng.standard_normal(tuple(y32.shape))
    loss = lambda: float(np.sum(N(ops.conv1d(E(x), E(w), E(b), **kw)) * g))  # noqa: E731
    dx, dw, db = ops.conv1d_backward(E(g), E(x), E(w), **kw)
    fd_check(loss, [x, w, b], [N(dx), N(dw), N(db)])


def test_conv1d_layer_matches_torch(backend, rng):
    module = nn.Conv1d(3, 6, 5, stride=2, padding=2, groups=3, bias=True)
    tmodule = torch.nn.Conv1d(3, 6, 5, stride=2, padding=2, groups=3).double()
    _check_layer_vs_torch(backend, rng, module, tmodule, rng.standard_normal((2, 3, 12)))


def test_conv1d_errors(rng):
    w = E(rng.standard_normal((2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv1d: input must have 3 dimensions \(N, C, L\)"):
        ops.conv1d(E(rng.standard_normal((1, 3, 4, 4))), w)
    with pytest.raises(ValueError, match="conv1d: input has 2 channels, expected 3"):
        ops.conv1d(E(rng.standard_normal((1, 2, 8))), w)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        ops.conv1d(E(rng.standard_normal((1, 3, 8))), w, stride=2, padding="same")
    with pytest.raises(TypeError, match="stride must be an int"):
        ops.conv1d(E(rng.standard_normal((1, 3, 8))), w, stride=(1, 2))
    with pytest.raises(ValueError, match=r"Conv1d\(3, 2, kernel_size=\(3,\).*\): input must be \(N, C, L\) or unbatched"):
        nn.Conv1d(3, 2, 3)(E(rng.standard_normal((8,)), "float32"))  # (C, L) is PyTorch's unbatched input


# --------------------------------------------------------------------------- 1-D pooling
POOL1D_CASES = [
    dict(kernel_size=2, stride=None, padding=0, ceil_mode=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=0, ceil_mode=False),
]


@pytest.mark.parametrize("kw", POOL1D_CASES)
@pytest.mark.parametrize("dilation", [1, 2])
def test_max_pool1d_matches_naive_and_torch(backend, rng, kw, dilation):
    x = rng.standard_normal((2, 3, 10))
    tx = T(x)
    ty = tF.max_pool1d(tx, dilation=dilation, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y, idx = ops.max_pool1d(E(x), dilation=dilation, return_indices=True, **kw)
    assert_close(y, ty.detach().numpy(), rtol=0, backend=backend)
    k, s = kw["kernel_size"], kw["stride"] or kw["kernel_size"]
    assert_close(y, naive_pool1d(x, k, s, kw["padding"], dilation, kw["ceil_mode"], "max"), rtol=0)
    dx = ops.max_pool1d_backward(E(g), idx, x.shape, dilation=dilation, **kw)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12, backend=backend)
    module = nn.MaxPool1d(dilation=dilation, **kw)
    y, dx = forward_backward(module, E(x), E(g))
    assert_close(y, ty.detach().numpy(), rtol=0)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("kw", POOL1D_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool1d_matches_naive_and_torch(backend, rng, kw, count_include_pad):
    x = rng.standard_normal((2, 3, 10))
    tx = T(x)
    ty = tF.avg_pool1d(tx, count_include_pad=count_include_pad, **kw)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = ops.avg_pool1d(E(x), count_include_pad=count_include_pad, **kw)
    assert_close(y, ty.detach().numpy(), rtol=1e-12, backend=backend)
    k, s = kw["kernel_size"], kw["stride"] or kw["kernel_size"]
    assert_close(y, naive_pool1d(x, k, s, kw["padding"], 1, kw["ceil_mode"], "avg", count_include_pad),
                 rtol=1e-12)
    dx = ops.avg_pool1d_backward(E(g), x.shape, count_include_pad=count_include_pad, **kw)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12, backend=backend)
    module = nn.AvgPool1d(count_include_pad=count_include_pad, **kw)
    y, dx = forward_backward(module, E(x), E(g))
    assert_close(y, ty.detach().numpy(), rtol=1e-12)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12)


def test_pool1d_finite_differences(rng):
    x = rng.standard_normal((1, 2, 9))
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y, idx = ops.max_pool1d(E(x), return_indices=True, **kw)
    g = rng.standard_normal(tuple(y.shape))
    fd_check(lambda: float(np.sum(N(ops.max_pool1d(E(x), **kw)) * g)), [x],
             [N(ops.max_pool1d_backward(E(g), idx, x.shape, **kw))])
    fd_check(lambda: float(np.sum(N(ops.avg_pool1d(E(x), count_include_pad=False, **kw)) * g)), [x],
             [N(ops.avg_pool1d_backward(E(g), x.shape, count_include_pad=False, **kw))])


def test_pool1d_errors(rng):
    x = E(rng.standard_normal((1, 2, 9)))
    with pytest.raises(ValueError, match=r"max_pool1d: padding 2 must be at most half the kernel size 2"):
        ops.max_pool1d(x, 2, padding=2)
    with pytest.raises(ValueError, match="at most half the kernel size 2"):  # PyTorch ignores the dilation here
        ops.max_pool1d(x, 2, padding=2, dilation=3)
    with pytest.raises(ValueError, match=r"MaxPool1d.*input must be \(N, C, L\) or unbatched"):
        nn.MaxPool1d(2)(E(rng.standard_normal((1, 2, 3, 3))))
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        nn.AvgPool1d(0)


# --------------------------------------------------------------------------- adaptive average pooling
ADAPTIVE_CASES = [((5, 7), (3, 2)), ((8, 6), (4, 3)), ((6, 6), 1), ((3, 5), (5, 7)), ((7, 4), (None, 3)),
                  ((9, 9), 4)]


@pytest.mark.parametrize("in_hw,out", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_naive_and_torch(backend, rng, in_hw, out):
    x = rng.standard_normal((2, 3) + in_hw)
    tx = T(x)
    ty = tF.adaptive_avg_pool2d(tx, out)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y = ops.adaptive_avg_pool2d(E(x), out)
    assert_close(y, ty.detach().numpy(), rtol=1e-12, backend=backend)
    assert_close(y, naive_adaptive_avg_pool2d(x, *ty.shape[2:]), rtol=1e-12)
    assert_close(ops.adaptive_avg_pool2d_backward(E(g), x.shape, out), tx.grad.numpy(), rtol=1e-12, backend=backend)
    module = nn.AdaptiveAvgPool2d(out)
    y, dx = forward_backward(module, E(x), E(g))
    assert_close(y, ty.detach().numpy(), rtol=1e-12)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12)


def test_adaptive_avg_pool_float32_finite_differences_and_1d(rng):
    x = rng.standard_normal((1, 2, 5, 7))
    assert_close(ops.adaptive_avg_pool2d(E(x, "float32"), (3, 4)),
                 tF.adaptive_avg_pool2d(torch.tensor(x, dtype=torch.float32), (3, 4)).numpy(), rtol=1e-6)
    g = rng.standard_normal((1, 2, 3, 4))
    fd_check(lambda: float(np.sum(N(ops.adaptive_avg_pool2d(E(x), (3, 4))) * g)), [x],
             [N(ops.adaptive_avg_pool2d_backward(E(g), x.shape, (3, 4)))])
    x1 = rng.standard_normal((2, 3, 10))
    tx = T(x1)
    ty = tF.adaptive_avg_pool1d(tx, 4)
    g1 = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g1))
    module = nn.AdaptiveAvgPool1d(4)
    y, dx = forward_backward(module, E(x1), E(g1))
    assert_close(y, ty.detach().numpy(), rtol=1e-12)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="output_size entries must be positive ints or None"):
        nn.AdaptiveAvgPool2d((0, 2))


# --------------------------------------------------------------------------- batch norm
def _bn_pair(cls, tcls, c, **kw):
    module = cls(c, **kw).to("float64")
    tmodule = tcls(c, **kw).double()
    if kw.get("affine", True):
        with torch.no_grad():  # non-trivial affine parameters, shared by both
            tmodule.weight.copy_(torch.linspace(0.5, 1.5, c, dtype=torch.float64))
            tmodule.bias.copy_(torch.linspace(-0.3, 0.4, c, dtype=torch.float64))
    _load_from_torch(module, tmodule)
    return module, tmodule


BN_CASES = [
    (nn.BatchNorm2d, "BatchNorm2d", (4, 3, 5, 6), dict()),
    (nn.BatchNorm2d, "BatchNorm2d", (3, 3, 4, 4), dict(momentum=None)),           # cumulative average
    (nn.BatchNorm2d, "BatchNorm2d", (4, 2, 3, 3), dict(affine=False, momentum=0.3, eps=1e-3)),
    (nn.BatchNorm2d, "BatchNorm2d", (4, 3, 2, 5), dict(track_running_stats=False)),
    (nn.BatchNorm1d, "BatchNorm1d", (6, 5), dict()),
    (nn.BatchNorm1d, "BatchNorm1d", (3, 4, 7), dict(momentum=None, affine=False)),
]


@pytest.mark.parametrize("cls,tname,shape,kw", BN_CASES)
def test_batch_norm_layer_matches_torch_train_and_eval(backend, rng, cls, tname, shape, kw):
    c = shape[1]
    module, tmodule = _bn_pair(cls, getattr(torch.nn, tname), c, **kw)
    assert list(module.state_dict()) == list(tmodule.state_dict())
    for step in range(3):  # training: batch statistics, running statistics move
        x = rng.standard_normal(shape) * (1 + step) + step
        tx = T(x)
        ty = tmodule(tx)
        g = rng.standard_normal(shape)
        ty.backward(torch.tensor(g))
        module.zero_grad()
        y, dx = forward_backward(module, E(x), E(g))
        assert_close(y, ty.detach().numpy(), rtol=1e-12, backend=backend)
        assert_close(dx, tx.grad.numpy(), rtol=1e-11, backend=backend)
        for name, p in module.named_parameters():
            assert_close(p.grad, dict(tmodule.named_parameters())[name].grad.numpy(), rtol=1e-12)
            dict(tmodule.named_parameters())[name].grad = None
        for name, buf in module.named_buffers():
            assert_close(buf, tmodule.state_dict()[name].numpy(), rtol=1e-12, err_msg=name)
    module.eval()
    tmodule.eval()
    x = rng.standard_normal(shape) + 0.5
    assert_close(module(E(x)), tmodule(torch.tensor(x)).detach().numpy(), rtol=1e-12, backend=backend)
    if kw.get("track_running_stats", True):
        assert int(N(module.num_batches_tracked)) == 3
        assert N(module.num_batches_tracked).dtype == np.int64


def test_batch_norm_float32_matches_torch(rng):
    module, tmodule = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32) * 3 + 1
    assert_close(module(E(x, "float32")), tmodule(torch.tensor(x)).detach().numpy(), rtol=1e-5)
    for name, buf in module.named_buffers():
        if name != "num_batches_tracked":
            assert buf.dtype == np.float32
            assert_close(buf, tmodule.state_dict()[name].numpy(), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_finite_differences(rng, training, affine):
    x = rng.standard_normal((3, 2, 2, 3))
    w, b = rng.uniform(0.5, 1.5, 2), rng.standard_normal(2)
    rm, rv = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    g = rng.standard_normal(x.shape)

    def forward(return_stats=False):
        return ops.batch_norm(E(x), None if training else E(rm), None if training else E(rv),
                            E(w) if affine else None, E(b) if affine else None, training=training,
                            return_stats=return_stats)

    _, mean, invstd = forward(return_stats=True)
    dx, dw, db = ops.batch_norm_backward(E(g), E(x), mean, invstd, E(w) if affine else None, training=training)
    loss = lambda: float(np.sum(N(forward()) * g))  # noqa: E731
    if affine:
        fd_check(loss, [x, w, b], [N(dx), N(dw), N(db)])
    else:
        assert dw is None and db is None
        fd_check(loss, [x], [N(dx)])


def test_batch_norm_functional_updates_running_stats_in_place(rng):
    x = rng.standard_normal((5, 3, 4))
    rm, rv = E(np.zeros(3)), E(np.ones(3))
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y = ops.batch_norm(E(x), rm, rv, training=True, momentum=0.2)
    ty = tF.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.2)
    assert_close(y, ty.numpy(), rtol=1e-12)
    assert_close(rm, trm.numpy(), rtol=1e-12)
    assert_close(rv, trv.numpy(), rtol=1e-12)  # unbiased variance, M = 5*4


def test_batch_norm_errors(rng):
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, eps=1e-05.*\): input has 4 channels, expected 3"):
        nn.BatchNorm2d(3)(E(rng.standard_normal((2, 4, 3, 3)), "float32"))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, .*\): input must be \(N, C, H, W\)"):
        nn.BatchNorm2d(3)(E(rng.standard_normal((2, 3)), "float32"))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(E(rng.standard_normal((1, 3)), "float32"))
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.BatchNorm1d(3, momentum=2)
    with pytest.raises(TypeError, match="running_mean dtype float32 differs from input dtype float64"):
        nn.BatchNorm1d(3).eval()(E(rng.standard_normal((2, 3))))
    bn = nn.BatchNorm1d(3).eval()
    y = bn(E(rng.standard_normal((2, 3)), "float32"))
    assert y.grad_fn is not None  # eval mode still records: the weight requires grad
    with engine.no_grad():
        assert bn(E(rng.standard_normal((2, 3)), "float32")).grad_fn is None


def test_batch_norm_state_dict_round_trip_and_to():
    bn = nn.BatchNorm2d(2, affine=False, track_running_stats=False)
    assert list(bn.state_dict()) == [] == list(torch.nn.BatchNorm2d(2, affine=False,
                                                                    track_running_stats=False).state_dict())
    bn = nn.BatchNorm2d(2).to("float64")
    assert str(bn.running_mean.dtype) == "float64" and str(bn.num_batches_tracked.dtype) == "int64"
    bn.load_state_dict({"weight": np.ones(2), "bias": np.zeros(2), "running_mean": np.array([1.0, 2.0]),
                        "running_var": np.array([4.0, 9.0]), "num_batches_tracked": np.array(7)})
    assert int(N(bn.num_batches_tracked)) == 7
    bn.reset_running_stats()
    assert_close(bn.running_var, np.ones(2))
    assert int(N(bn.num_batches_tracked)) == 0


# --------------------------------------------------------------------------- residual blocks
class TorchBasicBlock(torch.nn.Module):
    """torchvision's BasicBlock, written out (torchvision is not a dependency)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.relu = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _torch_resnet(w=4):
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, w, 3, padding=1, bias=False), torch.nn.BatchNorm2d(w), torch.nn.ReLU(),
        TorchBasicBlock(w, w), TorchBasicBlock(w, 2 * w, 2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2 * w, 3)).double()


def _engine_resnet(w=4):
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        nn.BasicBlock(w, w), nn.BasicBlock(w, 2 * w, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 3)).to("float64")


def test_resnet_loads_torch_state_dict_and_matches_in_train_and_eval(backend, rng):
    torch.manual_seed(0)
    tmodel = _torch_resnet()
    for _ in range(2):  # give every BatchNorm non-trivial running statistics
        tmodel(torch.tensor(rng.standard_normal((4, 1, 8, 8)) * 2 + 1))
    model = _engine_resnet()
    assert list(model.state_dict()) == list(tmodel.state_dict())
    model.load_state_dict(tmodel.state_dict())  # torch tensors are accepted as they are
    x = rng.standard_normal((3, 1, 8, 8))
    tmodel.eval()
    model.eval()
    assert_close(model(E(x)), tmodel(torch.tensor(x)).detach().numpy(), rtol=1e-12, backend=backend)
    tmodel.train()
    model.train()
    tx = T(x)
    ty = tmodel(tx)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(g))
    y, dx = forward_backward(model, E(x), E(g))
    assert_close(y, ty.detach().numpy(), rtol=1e-12, backend=backend)
    assert_close(dx, tx.grad.numpy(), rtol=1e-10, backend=backend)
    tparams = dict(tmodel.named_parameters())
    for name, p in model.named_parameters():
        assert_close(p.grad, tparams[name].grad.numpy(), rtol=1e-10, err_msg=name)
    tstate = tmodel.state_dict()
    for name, buf in model.named_buffers():  # running statistics after the training step
        assert_close(buf, tstate[name].numpy(), rtol=1e-12, err_msg=name)


def test_residual_sums_gradients_of_both_paths(rng):
    """Identity shortcut: dx = body's dx + grad; projection: the two input gradients add."""
    x = rng.standard_normal((2, 3))
    lin = nn.Linear(3, 3).to("float64")
    block = nn.Residual(lin)
    g = rng.standard_normal((2, 3))
    y, dx = forward_backward(block, E(x), E(g))
    assert_close(y, x @ N(lin.weight.data).T + N(lin.bias.data) + x, rtol=1e-12)
    assert_close(dx, g @ N(lin.weight.data) + g, rtol=1e-12)

    body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to("float64")
    proj = nn.Linear(3, 2, bias=False).to("float64")
    block = nn.Residual(body, shortcut=proj, activation=nn.Sigmoid())
    assert list(block.state_dict()) == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                                        "shortcut.weight"]
    g = rng.standard_normal((2, 2))
    _, dx = forward_backward(block, E(x), E(g))
    params = [p for p in block.parameters()]
    hosts = [N(p.data).copy() for p in params]

    def loss():
        for p, h in zip(params, hosts):
            p.data = E(h)
        return float(np.sum(N(block(E(x))) * g))

    fd_check(loss, [x] + hosts, [N(dx)] + [N(p.grad) for p in params])


def test_residual_conv_block_matches_torch(rng):
    body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    block = nn.Residual(body, activation=nn.ReLU()).to("float64")
    tbody = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(2, 2, 3, padding=1)).double()
    block.load_state_dict({f"body.{k}": v for k, v in tbody.state_dict().items()})
    x = rng.standard_normal((2, 2, 5, 5))
    tx = T(x)
    ty = torch.relu(tbody(tx) + tx)
    g = rng.standard_normal(x.shape)
    ty.backward(torch.tensor(g))
    y, dx = forward_backward(block, E(x), E(g))
    assert_close(y, ty.detach().numpy(), rtol=1e-12)
    assert_close(dx, tx.grad.numpy(), rtol=1e-12)


def test_residual_errors(rng):
    block = nn.Residual(nn.Conv2d(2, 4, 3, padding=1))
    with pytest.raises(ValueError, match=r"Residual: the body output has shape \(1, 4, 5, 5\) but the identity "
                                         r"shortcut output has shape \(1, 2, 5, 5\).*projection shortcut"):
        block(E(rng.standard_normal((1, 2, 5, 5)), "float32"))
    with pytest.raises(TypeError, match="body must be a Module"):
        nn.Residual(lambda x: x)


def test_numpy_and_array_api_strict_agree_on_a_resnet(rng):
    """Cross-backend parity: same seeded weights and data, same outputs and gradients."""
    if backends.unavailable_reason("array_api_strict"):
        pytest.skip(backends.unavailable_reason("array_api_strict"))
    engine.manual_seed(3)
    model = _engine_resnet()
    strict = _engine_resnet().to("array_api_strict")
    strict.load_state_dict(model.state_dict())
    x = rng.standard_normal((2, 1, 7, 7))
    g = rng.standard_normal((2, 3))
    outs = []
    for m, name in ((model, "numpy"), (strict, "array_api_strict")):
        with engine.use_backend(name):
            y, dx = forward_backward(m, E(x), E(g))
            outs.append((N(y), N(dx), {k: N(p.grad) for k, p in m.named_parameters()},
                         {k: N(b) for k, b in m.named_buffers()}))
    (y0, dx0, g0, b0), (y1, dx1, g1, b1) = outs
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-13)
    for k in g0:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-11, atol=1e-13, err_msg=k)
    for k in b0:
        np.testing.assert_allclose(b1[k], b0[k], rtol=1e-12, atol=1e-13, err_msg=k)


# --------------------------------------------------------------------------- the example
@pytest.mark.slow
def test_resnet_example_learns_mnist5k(capsys):
    pytest.importorskip("engine.data")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    try:
        import train_resnet
    finally:
        sys.path.pop(0)
    with engine.use_backend("numpy"):
        acc = train_resnet.main(["--epochs", "2", "--train-limit", "2000", "--width", "8", "--batch-size", "32",
                                 "--lr", "1e-2", "--test-limit", "500", "--seed", "0"])
    assert acc >= 0.8, capsys.readouterr().out
