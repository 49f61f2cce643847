"""The installed package owns one top-level name, ``engine``.

The repository keeps ``backends/``, ``kernels/`` and ``bench/`` at its root;
``pyproject.toml`` installs them as ``engine.backends``, ``engine.kernels`` and
``engine.bench``. These tests build the wheel, look inside it, install it in a
fresh virtual environment and use it from a folder outside the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"engine.backends": "backends", "engine.kernels": "kernels", "engine.bench": "bench"}


def _pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _source_packages():
    """Every package of the repository, by its installed name."""
    found = set()
    for top, installed in [("engine", "engine"), *((folder, name) for name, folder in MAPPED.items())]:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((installed, *rel)))
    return found


def test_pyproject_lists_every_package_under_one_name():
    tool = _pyproject()["tool"]["setuptools"]
    assert set(tool["packages"]) == _source_packages()
    assert all(name == "engine" or name.startswith("engine.") for name in tool["packages"])
    assert tool["package-dir"] == MAPPED


def test_source_checkout_without_install_imports(tmp_path):
    """With only the repository root on ``sys.path`` (no install), the mapped
    subpackages come from the root's folders."""
    code = ("import engine, engine.backends, engine.kernels, engine.bench; "
            "from engine.kernels import native; engine.set_backend('array_api_strict'); "
            "print(engine.backends.__file__); print(native.__file__)")
    # -S: no site processing, so no .pth file installs the editable finder; site-packages stay
    # importable through PYTHONPATH (NumPy and array-api-compat).
    site_dirs = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *site_dirs]), "PYTHONNOUSERSITE": "1"}
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    backends_file, native_file = done.stdout.split()
    assert Path(backends_file) == ROOT / "backends" / "__init__.py"
    assert Path(native_file) == ROOT / "kernels" / "native.py"


def test_incomplete_package_says_how_to_install(tmp_path):
    """An ``engine`` folder without its subpackages (copied away from the checkout)
    fails with one line naming the fix, not a bare ImportError deep inside."""
    copy = tmp_path / "engine"
    copy.mkdir()
    for name in ("__init__.py", "_blas_env.py"):
        (copy / name).write_bytes((ROOT / "engine" / name).read_bytes())
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    done = subprocess.run([sys.executable, "-S", "-c", "import engine"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "pip install -e ." in done.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools writes build/ and *.egg-info into the tree it builds
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "results",
                                                                "__pycache__", ".pytest_cache"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{done.stdout}\n{done.stderr}")
    (path,) = out.glob("engine-*.whl")
    return path


def test_wheel_has_one_top_level_name_and_the_kernel_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"engine"}, sorted(tops)
    assert len([t for t in tops if t.endswith(".dist-info")]) == 1
    top_level = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["engine"]
    shipped = {n for n in names if n.startswith("engine/kernels/")}
    sources = {f"engine/kernels/{p.name}" for p in (ROOT / "kernels").iterdir()
               if p.suffix in (".cu", ".cuh", ".h", ".c")}
    assert sources and sources <= shipped, sorted(sources - shipped)
    for package, folder in MAPPED.items():
        modules = {f"{package.replace('.', '/')}/{p.name}" for p in (ROOT / folder).glob("*.py")}
        assert modules <= set(names), sorted(modules - set(names))


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_trains_outside_the_checkout(wheel, tmp_path):
    """A fresh venv, ``pip install`` of the wheel, then from a folder outside the
    repository: import, one epoch on mnist5k with the C kernels on, the bench's help."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                          timeout=900)
    if done.returncode != 0:
        pytest.fail(f"pip install of the wheel failed:\n{done.stdout}\n{done.stderr}")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(ENGINE_CACHE_DIR=str(tmp_path / "cache"), PYTHONNOUSERSITE="1")

    def run(*args, timeout=600):
        done = subprocess.run([python, *args], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    where = run("-c", "import engine, engine.backends, engine.kernels; print(engine.__file__); "
                      "print(engine.kernels.__file__)")
    for line in where.split():
        assert str(ROOT) not in line and str(env_dir) in line, where
    from engine.kernels import native
    if native.library() is None:
        pytest.skip(f"the C kernels are off on this machine, so the check that they load from the wheel "
                    f"cannot run: {native.status()}")
    out = run("-m", "engine", "train", "--model", "simple_cnn", "--dataset", "mnist5k", "--epochs", "1")
    assert "C kernels on" in out, out
    assert "test accuracy" in out, out
    assert list((tmp_path / "cache" / "native").glob("cpu_conv-*.so")), "no C library was built in the cache"
    assert "usage: python -m engine.bench" in run("-m", "engine.bench", "--help")
