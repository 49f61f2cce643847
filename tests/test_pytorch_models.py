"""Models written the PyTorch way, with only the imports changed, against PyTorch
2.13 CPU in float64: custom ``forward`` methods, a module called twice, skips by
``engine.cat``, DenseNet and Inception blocks, two inputs and two outputs,
BasicBlock, depthwise-separable convolutions; saliency, Grad-CAM and a
fine-tuning step with BatchNorm frozen, in eval mode. Each model class is
written once and built from either library (``L.nn``, ``L.F``, ``L.cat``)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import engine
import engine.nn.functional as F
from engine import nn

from _helpers import assert_rel

torch = pytest.importorskip("torch", reason="PyTorch CPU (pip install torch==2.13.0) is the oracle of these tests")

ENGINE = SimpleNamespace(nn=nn, F=F, cat=engine.cat, flatten=engine.flatten, optim=engine.optim)
TORCH = SimpleNamespace(nn=torch.nn, F=torch.nn.functional, cat=torch.cat, flatten=torch.flatten, optim=torch.optim)
TOL = 1e-10


# --------------------------------------------------------------------------- the models, written once
def simple_cnn(L):
    """The MNIST tutorial's SimpleCNN: F.relu, x.view(-1, 64*7*7), one pool used twice."""
    class SimpleCNN(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = L.nn.Conv2d(1, 32, 3, padding=1)
            self.conv2 = L.nn.Conv2d(32, 64, 3, padding=1)
            self.pool = L.nn.MaxPool2d(2, 2)
            self.fc1 = L.nn.Linear(64 * 7 * 7, 128)
            self.fc2 = L.nn.Linear(128, 10)
            self.dropout = L.nn.Dropout(0.25)

        def forward(self, x):
            x = self.pool(L.F.relu(self.conv1(x)))
            x = self.pool(L.F.relu(self.conv2(x)))
            x = x.view(-1, 64 * 7 * 7)
            x = self.dropout(L.F.relu(self.fc1(x)))
            return self.fc2(x)
    return SimpleCNN()


def unet(L):
    """An encoder, a bottleneck, a transposed-convolution decoder and a skip joined by cat."""
    class TinyUNet(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = L.nn.Sequential(L.nn.Conv2d(1, 4, 3, padding=1), L.nn.ReLU())
            self.down = L.nn.MaxPool2d(2)
            self.mid = L.nn.Sequential(L.nn.Conv2d(4, 8, 3, padding=1), L.nn.ReLU())
            self.up = L.nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.dec = L.nn.Conv2d(8, 4, 3, padding=1)
            self.head = L.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            skip = self.enc(x)
            y = self.up(self.mid(self.down(skip)))
            y = L.F.relu(self.dec(L.cat([y, skip], dim=1)))
            return self.head(y)
    return TinyUNet()


def densenet_block(L):
    class DenseBlock(L.nn.Module):
        def __init__(self, channels=3, growth=2, layers=3):
            super().__init__()
            self.layers = L.nn.ModuleList()
            for i in range(layers):
                c = channels + i * growth
                self.layers.append(L.nn.Sequential(L.nn.BatchNorm2d(c), L.nn.ReLU(),
                                                   L.nn.Conv2d(c, growth, 3, padding=1, bias=False)))

        def forward(self, x):
            features = [x]
            for layer in self.layers:
                features.append(layer(L.cat(features, 1)))
            return L.cat(features, 1)
    return DenseBlock()


def inception(L):
    class Inception(L.nn.Module):
        def __init__(self, c=3):
            super().__init__()
            self.b1 = L.nn.Conv2d(c, 2, 1)
            self.b2 = L.nn.Sequential(L.nn.Conv2d(c, 2, 1), L.nn.ReLU(), L.nn.Conv2d(2, 3, 3, padding=1))
            self.b3 = L.nn.Sequential(L.nn.Conv2d(c, 1, 1), L.nn.ReLU(), L.nn.Conv2d(1, 2, 5, padding=2))
            self.b4 = L.nn.Sequential(L.nn.MaxPool2d(3, stride=1, padding=1), L.nn.Conv2d(c, 2, 1))

        def forward(self, x):
            return L.F.relu(L.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))
    return Inception()


def two_in_two_out(L):
    class TwoHeads(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.image = L.nn.Sequential(L.nn.Conv2d(1, 3, 3), L.nn.Tanh(), L.nn.AdaptiveAvgPool2d(1),
                                         L.nn.Flatten())
            self.meta = L.nn.Linear(4, 3)
            self.classify = L.nn.Linear(6, 5)
            self.regress = L.nn.Linear(3, 1)

        def forward(self, image, meta):
            a, b = self.image(image), L.F.relu(self.meta(meta))
            return self.classify(L.cat([a, b], 1)), self.regress(a * b)
    return TwoHeads()


def basic_block(L):
    """ResNet's BasicBlock with torchvision's attribute names; the engine's is nn.BasicBlock."""
    if L is ENGINE:
        return nn.BasicBlock(3, 4, stride=2)

    class BasicBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 3, 2, 1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(4)
            self.conv2 = torch.nn.Conv2d(4, 4, 3, 1, 1, bias=False)
            self.bn2 = torch.nn.BatchNorm2d(4)
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, 2, bias=False), torch.nn.BatchNorm2d(4))

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + self.downsample(x))
    return BasicBlock()


def depthwise_separable(L):
    return L.nn.Sequential(L.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), L.nn.BatchNorm2d(4),
                           L.nn.ReLU(), L.nn.Conv2d(4, 6, 1))


def _twins(builder, seed=0):
    torch.manual_seed(seed)
    theirs = builder(TORCH).double()
    ours = builder(ENGINE).to("float64")
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


def _leaf(a):
    return engine.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _compare_grads(ours, theirs, tol=TOL):
    tparams = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        tp = tparams[name]
        if tp.grad is None:
            assert p.grad is None, name
        else:
            assert_rel(p.grad, tp.grad.numpy(), tol, f"{name}.grad")


# --------------------------------------------------------------------------- the checks
def test_simple_cnn_the_pytorch_way_matches_loss_gradients_and_five_adam_steps(backend):
    ours, theirs = _twins(simple_cnn)
    ours.dropout.eval()  # dropout masks come from two different generators: compared without them
    theirs.dropout.eval()
    opt, topt = engine.optim.Adam(ours.parameters(), lr=1e-3), torch.optim.Adam(theirs.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    for step in range(5):
        x, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)
        opt.zero_grad()
        topt.zero_grad()
        x_t, tx = _leaf(x)
        loss = F.cross_entropy(ours(x_t), engine.asarray(y))
        tloss = torch.nn.functional.cross_entropy(theirs(tx), torch.tensor(y))
        loss.backward()
        tloss.backward()
        assert_rel(loss.detach(), tloss.detach().numpy(), TOL, f"loss at step {step}")
        if step == 0:
            assert_rel(x_t.grad, tx.grad.numpy(), TOL, "input gradient")
            _compare_grads(ours, theirs)
        opt.step()
        topt.step()
    for name, p in ours.named_parameters():
        assert_rel(p.data, dict(theirs.named_parameters())[name].detach().numpy(), 1e-9, name)


@pytest.mark.parametrize("builder, shape", [(unet, (2, 1, 8, 8)), (densenet_block, (3, 3, 5, 5)),
                                            (inception, (2, 3, 6, 6)), (basic_block, (2, 3, 7, 7)),
                                            (depthwise_separable, (2, 4, 6, 5))],
                         ids=["unet_cat_skip", "densenet_block", "inception_block", "basic_block",
                              "depthwise_separable"])
def test_branching_models_match_torch_gradients(backend, builder, shape):
    ours, theirs = _twins(builder)
    x = np.random.default_rng(1).standard_normal(shape)
    x_t, tx = _leaf(x)
    y, ty = ours(x_t), theirs(tx)
    assert_rel(y.detach(), ty.detach().numpy(), TOL, "output")
    g = np.random.default_rng(2).standard_normal(ty.shape)
    y.backward(g)
    ty.backward(torch.tensor(g))
    assert_rel(x_t.grad, tx.grad.numpy(), TOL, "input gradient")
    _compare_grads(ours, theirs)
    for name, buf in ours.named_buffers():  # BatchNorm running statistics moved alike
        assert_rel(buf, theirs.state_dict()[name].numpy(), TOL, name)


def test_two_inputs_and_two_outputs(backend):
    ours, theirs = _twins(two_in_two_out)
    rng = np.random.default_rng(3)
    image, meta = rng.standard_normal((4, 1, 6, 6)), rng.standard_normal((4, 4))
    labels, target = rng.integers(0, 5, 4), rng.standard_normal((4, 1))
    (i_t, ti), (m_t, tm) = _leaf(image), _leaf(meta)
    logits, value = ours(i_t, m_t)
    tlogits, tvalue = theirs(ti, tm)
    loss = F.cross_entropy(logits, engine.asarray(labels)) + 0.5 * F.mse_loss(value, engine.asarray(target))
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(labels)) + \
        0.5 * torch.nn.functional.mse_loss(tvalue, torch.tensor(target))
    loss.backward()
    tloss.backward()
    assert_rel(loss.detach(), tloss.detach().numpy(), TOL, "loss")
    assert_rel(i_t.grad, ti.grad.numpy(), TOL, "image gradient")
    assert_rel(m_t.grad, tm.grad.numpy(), TOL, "meta gradient")
    _compare_grads(ours, theirs)


# --------------------------------------------------------------------------- eval mode
def _trained_like_cnn(L):
    return L.nn.Sequential(L.nn.Conv2d(1, 4, 3, padding=1), L.nn.BatchNorm2d(4), L.nn.ReLU(), L.nn.MaxPool2d(2),
                           L.nn.Conv2d(4, 6, 3, padding=1), L.nn.ReLU(), L.nn.AdaptiveAvgPool2d(1),
                           L.nn.Flatten(), L.nn.Linear(6, 3))


def _with_running_stats(ours, theirs):
    """Give BatchNorm non-trivial running statistics in both, then switch to eval."""
    x = np.random.default_rng(9).standard_normal((6, 1, 8, 8)) * 2 + 1
    with engine.no_grad(), torch.no_grad():
        ours(engine.asarray(x))
        theirs(torch.tensor(x))
    return ours.eval(), theirs.eval()


def test_saliency_map_in_eval_mode(backend):
    ours, theirs = _with_running_stats(*_twins(_trained_like_cnn))
    x = np.random.default_rng(4).standard_normal((2, 1, 8, 8))
    x_t, tx = _leaf(x)
    scores, tscores = ours(x_t), theirs(tx)
    cls = int(engine.to_numpy(scores.detach())[0].argmax())
    scores[0, cls].backward()
    tscores[0, cls].backward()
    assert_rel(x_t.grad, tx.grad.numpy(), TOL, "saliency")
    assert float(abs(engine.Tensor(x_t.grad)[1]).sum()) == 0  # the other image's score was not differentiated


def _grad_cam(L, model, x, via):
    """Grad-CAM of class 0 on the second convolution: its activations from a
    forward hook, their gradient from ``retain_grad`` or a full backward hook."""
    keep = {}
    conv = model[4]
    conv.register_forward_hook(lambda m, args, out: keep.update(act=out))
    if via == "backward_hook":
        conv.register_full_backward_hook(lambda m, gi, go: keep.update(grad=go[0]))
    out = model(x)
    if via == "retain_grad":
        keep["act"].retain_grad()
    out[:, 0].sum().backward()
    act = keep["act"]
    grad = act.grad if via == "retain_grad" else keep["grad"]
    if L is ENGINE and via == "retain_grad":
        grad = engine.Tensor(grad)  # .grad is a backend array (optimizers work on it); wrap it for Tensor methods
    weights = grad.mean((2, 3), keepdim=True)
    return L.F.relu((weights * act).sum(1))


@pytest.mark.parametrize("via", ["retain_grad", "backward_hook"])
def test_grad_cam_in_eval_mode(backend, via):
    ours, theirs = _with_running_stats(*_twins(_trained_like_cnn))
    x = np.random.default_rng(5).standard_normal((2, 1, 8, 8))
    cam = _grad_cam(ENGINE, ours, engine.asarray(x), via)
    tcam = _grad_cam(TORCH, theirs, torch.tensor(x), via)
    assert cam.shape == (2, 4, 4)
    assert_rel(cam.detach(), tcam.detach().numpy(), TOL, "Grad-CAM")


def test_fine_tuning_with_batch_norm_frozen_in_eval_mode(backend):
    ours, theirs = _with_running_stats(*_twins(_trained_like_cnn))
    for model, lib in ((ours, nn), (theirs, torch.nn)):
        model.train()
        for m in model.modules():
            if isinstance(m, lib.BatchNorm2d):
                m.eval()  # running statistics used and kept
                m.requires_grad_(False)
        model[0].requires_grad_(False)  # a frozen first layer too
    frozen = {k: engine.to_numpy(v).copy() for k, v in ours.state_dict().items() if k.startswith(("0.", "1."))}
    opt = engine.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([p for p in theirs.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    rng = np.random.default_rng(6)
    for _ in range(2):
        x, y = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 3, 4)
        opt.zero_grad()
        topt.zero_grad()
        F.cross_entropy(ours(engine.asarray(x)), engine.asarray(y)).backward()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        _compare_grads(ours, theirs)
        opt.step()
        topt.step()
    tstate = theirs.state_dict()
    for k, v in ours.state_dict().items():
        assert_rel(v, tstate[k].numpy(), 1e-9, k)
    for k, v in frozen.items():  # frozen weights and running statistics did not move
        np.testing.assert_array_equal(engine.to_numpy(ours.state_dict()[k]), v, err_msg=k)
    assert all(p.grad is None for p in ours[0].parameters()) and all(p.grad is None for p in ours[1].parameters())
