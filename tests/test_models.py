"""Model zoo and ``summary``: architectures, parameter counts and shapes against
PyTorch twins, receptive fields and FLOPs against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from engine import backends
import engine
from engine import models, nn
from engine.summary import Summary, summary

torch = pytest.importorskip("torch")
tnn = torch.nn


def torch_twin(name):
    if name == "simple_cnn":
        return tnn.Sequential(
            tnn.Conv2d(1, 32, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Conv2d(32, 64, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
            tnn.Flatten(), tnn.Linear(3136, 128), tnn.ReLU(), tnn.Dropout(0.25), tnn.Linear(128, 10))
    if name == "lenet5":
        return tnn.Sequential(
            tnn.Conv2d(1, 6, 5, padding=2), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Conv2d(6, 16, 5), tnn.Tanh(), tnn.AvgPool2d(2),
            tnn.Flatten(), tnn.Linear(400, 120), tnn.Tanh(), tnn.Linear(120, 84), tnn.Tanh(),
            tnn.Linear(84, 10))
    if name == "course_cnn":
        return tnn.Sequential(
            tnn.Conv2d(1, 8, 5, stride=2, padding=2), tnn.LeakyReLU(0.01),
            tnn.Conv2d(8, 16, 5, stride=2, padding=2), tnn.LeakyReLU(0.01),
            tnn.Conv2d(16, 32, 5, stride=2, padding=0), tnn.LeakyReLU(0.01),
            tnn.Flatten(), tnn.Linear(128, 64), tnn.LeakyReLU(0.01), tnn.Linear(64, 10))
    if name == "resnet20":
        layers = [tnn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU()]
        channels = 16
        for stage, out in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(TorchBasicBlock(channels, out, 2 if stage and not block else 1))
                channels = out
        return tnn.Sequential(*layers, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(64, 10))
    if name == "vgg11_bn":
        layers, channels = [], 3
        for item in models.VGG11_LAYOUT:
            if item == "M":
                layers.append(tnn.MaxPool2d(2))
            else:
                layers += [tnn.Conv2d(channels, item, 3, padding=1), tnn.BatchNorm2d(item), tnn.ReLU()]
                channels = item
        return tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(512, 10))
    raise KeyError(name)


class TorchBasicBlock(tnn.Module):
    """torchvision's BasicBlock, written out (torchvision is not a test dependency)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.downsample = (tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride=stride, bias=False), tnn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


NAMES = ["simple_cnn", "lenet5", "course_cnn"]  # 1x28x28 inputs
CIFAR_NAMES = ["resnet20", "vgg11_bn"]  # 3x32x32 inputs


def test_simple_cnn_parameter_count():
    # conv 1->32 k3: 320, conv 32->64 k3: 18,496, linear 3136->128: 401,536, linear 128->10: 1,290
    assert models.simple_cnn().num_parameters() == 421_642
    assert sum(p.numel() for p in torch_twin("simple_cnn").parameters()) == 421_642


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_and_keys_match_torch(name):
    ours, theirs = models.get_model(name), torch_twin(name)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    for k in ours_sd:
        assert tuple(ours_sd[k].shape) == tuple(theirs_sd[k].shape), k
    # per-layer counts in the summary equal PyTorch's per-module counts
    rows = ours.summary((1, 28, 28)).rows
    for row, module in zip(rows, theirs):
        assert row.params == sum(p.numel() for p in module.parameters()), row.name


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_torch_with_the_same_weights(name):
    engine.manual_seed(0)
    ours, theirs = models.get_model(name, dtype="float64"), torch_twin(name).double().eval()
    ours.eval()
    theirs.load_state_dict({k: torch.from_numpy(engine.to_numpy(v).copy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    got = engine.to_numpy(ours(engine.asarray(x, dtype="float64")))
    want = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_summary_shapes_match_torch(name):
    theirs = torch_twin(name).eval()
    x = torch.zeros(2, 1, 28, 28)
    shapes = []
    for m in theirs:
        x = m(x)
        shapes.append(tuple(x.shape))
    s = models.get_model(name).summary((2, 1, 28, 28))
    assert [r.output_shape for r in s.rows] == shapes
    assert s.total_params == sum(p.numel() for p in theirs.parameters())


def test_models_on_every_backend(backend):
    engine.manual_seed(1)
    for name in NAMES:
        m = models.get_model(name)
        y = m(engine.asarray(np.zeros((2, 1, 28, 28)), dtype="float32"))
        assert tuple(y.shape) == (2, 10)
        assert backends.backend_of(y.data) is backend


def test_same_seed_same_weights():
    engine.manual_seed(5)
    a = models.simple_cnn().state_dict()
    engine.manual_seed(5)
    b = models.simple_cnn().state_dict()
    for k in a:
        np.testing.assert_array_equal(engine.to_numpy(a[k]), engine.to_numpy(b[k]))


def test_get_model_names_and_errors():
    assert set(models.model_names()) == set(NAMES + CIFAR_NAMES) == set(models.INPUT_SHAPES)
    assert models.get_model("simple-cnn").num_parameters() == 421_642
    assert models.get_model("course_cnn", num_classes=3)(engine.asarray(np.zeros((1, 1, 28, 28)),
                                                                       dtype="float32")).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown model 'resnet'.*simple_cnn"):
        models.get_model("resnet")


def test_lenet5_and_course_cnn_counts():
    assert models.lenet5().num_parameters() == 61_706
    assert models.course_cnn().num_parameters() == 25_162


# ----------------------------------------------------------------------------- summary
def test_summary_receptive_fields_and_flops_simple_cnn():
    s = models.simple_cnn().summary((1, 28, 28))
    assert isinstance(s, Summary)
    rf = [r.receptive_field for r in s.rows]
    # conv3: 3; pool2: 3+1*1=4 (jump 2); conv3: 4+2*2=8; pool2: 8+1*2=10 (jump 4); flatten keeps it
    assert rf[:7] == [(3, 3), (3, 3), (4, 4), (8, 8), (8, 8), (10, 10), (10, 10)]
    assert rf[7:] == ["all"] * 4
    flops = [r.flops for r in s.rows]
    assert flops[0] == 2 * 32 * 28 * 28 * 9
    assert flops[3] == 2 * 64 * 14 * 14 * 32 * 9
    assert flops[7] == 2 * 3136 * 128
    assert flops[10] == 2 * 128 * 10
    assert flops[1] == flops[2] == 0
    assert s.total_flops == sum(flops) == 8_482_304
    assert s.total_params == 421_642
    text = str(s)
    assert "421,642" in text and "8,482,304" in text and "multiply-adds" in text
    assert "10x10" in text and "Conv2d(32→64, k3, p1)" in text


def test_summary_receptive_field_strides_and_dilation():
    assert [r.receptive_field for r in models.course_cnn().summary((1, 28, 28)).rows][:5:2] == \
        [(5, 5), (13, 13), (29, 29)]  # 5; 5+4*2; 13+4*4
    m = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.MaxPool2d(2), nn.Conv2d(2, 2, (3, 1), stride=(2, 1)),
                      nn.AvgPool2d(3, stride=1, padding=1), nn.GlobalAvgPool2d())
    rows = m.summary((1, 20, 20)).rows
    # dilated 3x3 = effective 5; pool2 adds 1 (jump 2); conv (3,1): +2*2 rows, +0 cols (jump (4,2));
    # avg-pool 3: +2*4 rows, +2*2 cols; global pooling sees everything
    assert [r.receptive_field for r in rows] == [(5, 5), (6, 6), (10, 6), (18, 10), "all"]
    assert rows[0].flops == 2 * 2 * 16 * 16 * 9


def test_summary_batch_scales_flops_and_leaves_model_alone():
    m = models.simple_cnn()
    m.train()
    state = engine.get_rng_state()
    one, four = summary(m, (1, 28, 28)), summary(m, (4, 1, 28, 28))
    assert four.total_flops == 4 * one.total_flops
    assert four.rows[0].output_shape == (4, 32, 28, 28)
    assert all(mod.training for mod in m.modules())
    assert engine.get_rng_state() == state
    assert all(p.grad is None for p in m.parameters())
    d = one.as_dict()
    assert d["total_params"] == 421_642 and d["layers"][0]["receptive_field"] == [3, 3]


def test_summary_errors():
    m = models.simple_cnn()
    with pytest.raises(ValueError, match="input_shape"):
        m.summary((0, 28, 28))
    with pytest.raises(ValueError, match="layer 0"):
        m.summary((28, 28))
    with pytest.raises(ValueError, match="layer 7"):
        m.summary((1, 32, 32))  # 3136 features expected, 4096 arrive


def test_summary_counts_flops_inside_composite_blocks():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x)) + x

    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), Block(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    rows = m.summary((1, 8, 8)).rows
    assert [r.type for r in rows] == ["Conv2d", "Block", "Flatten", "Linear"]
    assert rows[1].params == 2 * 2 * 9 + 2 and rows[1].flops == 2 * (2 * 8 * 8) * (2 * 9)
    assert rows[1].receptive_field is None and rows[3].receptive_field == "all"
    assert "?" in str(m.summary((1, 8, 8)))
    assert "forward" not in m[1].conv.__dict__  # the counting wrapper is gone


def test_default_init_is_pytorchs():
    engine.manual_seed(0)
    m = models.simple_cnn()
    twin = torch_twin("simple_cnn")
    ours, theirs = m.state_dict(), twin.state_dict()
    for k in ours:
        a = engine.to_numpy(ours[k]).astype(np.float64)
        fan_in = int(np.prod(theirs[k.replace("bias", "weight")].shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(a).max() <= bound * (1 + 1e-6), k
        if a.size > 500:  # uniform in ±bound: std = bound/sqrt(3), as torch's own draw
            assert a.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), k
            assert a.std() == pytest.approx(theirs[k].double().std().item(), rel=0.1), k
    engine.manual_seed(0)
    other = models.simple_cnn(init="kaiming_normal").state_dict()
    assert not np.any(engine.to_numpy(other["0.bias"]))
    w = engine.to_numpy(other["3.weight"])
    assert w.std() == pytest.approx(np.sqrt(2 / (32 * 9)), rel=0.05)
    with pytest.raises(ValueError, match="init must be"):
        models.course_cnn(init="orthogonal")


def test_summary_flops_of_1d_and_transposed_convs_equal_torch_flop_counter():
    torch = pytest.importorskip("torch", reason="PyTorch's FlopCounterMode is the oracle")
    from torch.utils.flop_counter import FlopCounterMode

    cases = [
        (nn.Sequential(nn.Conv1d(2, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4, 3)),
         torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                             torch.nn.Linear(4 * 4, 3)), (2, 10)),
        (nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)),
         torch.nn.Sequential(torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)), (2, 5, 4)),
    ]
    for ours, theirs, shape in cases:
        with FlopCounterMode(display=False) as counter:
            theirs(torch.zeros((1,) + shape))
        assert ours.summary(shape).total_flops == counter.get_total_flops()


# ----------------------------------------------------------------------------- 32x32 RGB models
def _load_into_torch(ours, theirs):
    state = {k: torch.from_numpy(engine.to_numpy(v).copy()) for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)


def test_cifar_model_counts_and_keys_match_torch():
    assert models.resnet20().num_parameters() == 272_474
    assert models.vgg11_bn().num_parameters() == 9_231_114
    for name in CIFAR_NAMES:
        ours, theirs = models.get_model(name), torch_twin(name)
        assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
        theirs_sd = theirs.state_dict()
        for k, v in ours.state_dict().items():
            assert tuple(v.shape) == tuple(theirs_sd[k].shape), k
        assert set(theirs_sd) == set(ours.state_dict()) | {k for k in theirs_sd if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", CIFAR_NAMES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cifar_models_forward_matches_torch(name, mode):
    engine.manual_seed(0)
    ours, theirs = models.get_model(name, dtype="float64"), torch_twin(name).double()
    rng = np.random.default_rng(0)
    for m in ours.modules():  # non-trivial running statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            c = m.weight.shape[0]
            m.load_state_dict({"weight": rng.uniform(0.5, 1.5, c), "bias": rng.normal(0, 0.1, c),
                               "running_mean": rng.normal(0, 0.1, c), "running_var": rng.uniform(0.5, 2, c),
                               "num_batches_tracked": np.array(0)})
    _load_into_torch(ours, theirs)
    getattr(ours, mode)()
    getattr(theirs, mode)()
    x = rng.standard_normal((3, 3, 32, 32))
    got = engine.to_numpy(ours(engine.asarray(x, dtype="float64")))
    want = theirs(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_cifar_model_summaries_and_widths():
    s = models.resnet20().summary((2, 3, 32, 32))
    assert s.rows[-1].output_shape == (2, 10) and s.total_params == 272_474
    assert [r.output_shape[1:] for r in s.rows[3:12:3]] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    v = models.vgg11_bn(width=16, num_classes=7)
    assert v.summary((1, 3, 32, 32)).rows[-1].output_shape == (1, 7)
    assert models.resnet20(in_channels=1).summary((1, 1, 28, 28)).rows[-1].output_shape == (1, 10)
    with pytest.raises(ValueError):
        models.vgg11_bn().summary((1, 3, 16, 16))  # five halvings need 32x32


def test_cifar_models_on_every_backend(backend):
    engine.manual_seed(1)
    for name in CIFAR_NAMES:
        m = models.get_model(name, width=8)
        y = m(engine.asarray(np.zeros((2, 3, 32, 32)), dtype="float32"))
        assert tuple(y.shape) == (2, 10) and backends.backend_of(y.data) is backend
