"""``python -m engine predict`` and the data options of ``train`` (--augment,
CIFAR, the preprocessing stored in the checkpoint), on tiny runs."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import engine
from engine.__main__ import main
from engine.checkpoint import load_checkpoint
from engine.data import DataLoader, load_dataset

Image = pytest.importorskip("PIL.Image", reason='predict reads PNG/JPEG through Pillow: pip install ".[images]"')

TINY = ["--train-samples", "128", "--test-samples", "64", "--batch-size", "32", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def mnist_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "digits.npz"
    assert main(["train", "--model", "course_cnn", "--seed", "2", "--augment", "--save", str(path), *TINY]) == 0
    return path


def test_train_records_the_preprocessing(mnist_checkpoint):
    extra = load_checkpoint(mnist_checkpoint, restore_rng=False).extra
    ds = load_dataset("mnist5k", "train")
    assert extra["model"] == "course_cnn" and extra["dataset"] == "mnist5k"
    assert extra["input_shape"] == [1, 28, 28] and extra["in_channels"] == 1 and extra["num_classes"] == 10
    assert extra["classes"] == list("0123456789") and extra["layout"] == "NCHW" and extra["augment"] is True
    assert extra["mean"] == pytest.approx(ds.mean) and extra["std"] == pytest.approx(ds.std)


def test_predict_on_pngs_agrees_with_the_training_pipeline(mnist_checkpoint, tmp_path, capsys):
    test = load_dataset("mnist5k", "test")
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(test.images[i, 0]).save(paths[-1])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(mnist_checkpoint), "--top-k", "4", *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    # the same model on the same images prepared by the DataLoader (as in evaluate)
    from engine.models import get_model
    ckpt = load_checkpoint(mnist_checkpoint, restore_rng=False)
    model = get_model("course_cnn")
    model.load_state_dict(ckpt.model_state)
    x, _ = next(iter(DataLoader(test.subset(slice(0, 5)), batch_size=5)))
    logits = engine.to_numpy(engine.predict(model, x)).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for line, path, p in zip(lines, paths, probs):
        name, rest = line.split(": ", 1)
        assert name == path
        entries = [e.rsplit(" ", 1) for e in rest.split(", ")]
        assert len(entries) == 4
        top = np.argsort(-p)[:4]
        assert [label for label, _ in entries] == [str(i) for i in top]
        assert [float(v.rstrip("%")) for _, v in entries] == pytest.approx(100 * p[top], abs=0.006)


def test_predict_converts_colour_and_size(mnist_checkpoint, tmp_path, capsys):
    test = load_dataset("mnist5k", "test")
    grey = Image.fromarray(test.images[0, 0])
    grey.save(tmp_path / "grey.png")
    grey.convert("RGB").resize((56, 56), Image.NEAREST).save(tmp_path / "big_rgb.jpg", quality=100)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(mnist_checkpoint), "--top-k", "1",
                 str(tmp_path / "grey.png"), str(tmp_path / "big_rgb.jpg")]) == 0
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first.split(": ")[1].split(" ")[0] == second.split(": ")[1].split(" ")[0]


def test_predict_errors_are_one_line(mnist_checkpoint, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    for argv, message, code in [
        (["predict", "--checkpoint", str(mnist_checkpoint), str(tmp_path / "missing.png")], "missing.png", 4),
        (["predict", "--checkpoint", str(mnist_checkpoint), str(tmp_path / "notes.png")],
         "notes.png: not a readable PNG or JPEG image", 2),
    ]:
        assert main(argv) == code
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err
    old = tmp_path / "old.npz"
    engine.save_checkpoint(old, engine.models.course_cnn(), extra={"model": "course_cnn"})
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "zero.png")
    assert main(["predict", "--checkpoint", str(old), str(tmp_path / "zero.png")]) == 2
    assert "does not record how its images were prepared" in capsys.readouterr().err


def test_predict_without_pillow_names_the_install_command(mnist_checkpoint, tmp_path, monkeypatch, capsys):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "zero.png")
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert main(["predict", "--checkpoint", str(mnist_checkpoint), str(tmp_path / "zero.png")]) == 2
    assert 'pip install "engine[images]"' in capsys.readouterr().err


def test_help_lists_predict_and_augment(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--top-k" in out and "IMAGE" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--augment" in capsys.readouterr().out


def test_cifar_train_augment_save_and_predict(monkeypatch, tmp_path, capsys):
    """resnet20 on a few CIFAR-format records written here, with --augment, then predict on a PNG."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    try:
        from test_cifar import _fake, _offline
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ENGINE_DATA", raising=False)
    _, src, _, content = _fake(monkeypatch, tmp_path)
    _offline(monkeypatch)
    ck = tmp_path / "cifar.npz"
    rc = main(["train", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(src), "--augment",
               "--epochs", "1", "--batch-size", "4", "--val-fraction", "0", "--save", str(ck)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "resnet20 (272,474 parameters) on cifar10: 12 train, 6 test" in out
    assert "augmentation" in out and "data preparation:" in out
    extra = load_checkpoint(ck, restore_rng=False).extra
    assert extra["input_shape"] == [3, 32, 32] and len(extra["mean"]) == 3 and extra["classes"][0] == "AIRPLANE"
    image = content["test_batch.bin"][0][0].transpose(1, 2, 0)
    Image.fromarray(image).save(tmp_path / "plane.png")
    assert main(["predict", "--checkpoint", str(ck), str(tmp_path / "plane.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{tmp_path / 'plane.png'}: ") and line.count("%") == 3
    assert main(["evaluate", "--checkpoint", str(ck), "--data-dir", str(src)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["train", "--model", "simple_cnn", "--dataset", "cifar10", "--data-dir", str(src), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--model simple_cnn does not take 32x32 images" in err and "resnet20, vgg11_bn" in err
