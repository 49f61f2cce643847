"""The README's Python examples run as written."""
from __future__ import annotations

import re
from pathlib import Path

import engine

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "the README has no Python example"
    namespace: dict = {}
    with engine.use_backend("numpy"):
        for block in blocks:  # later blocks may use what earlier ones defined, as a reader would
            exec(compile(block, str(README), "exec"), namespace)
    assert "conv1.weight" in capsys.readouterr().out
