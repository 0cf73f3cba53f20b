"""The README's examples run as written, without a warning (a reader's first contact)."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_api_example_runs_quietly():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "the README has a Python example"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for code in blocks:
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own code


def test_demo_runs_quietly():
    out = subprocess.run([sys.executable, "-W", "error", "-m", "permlib.demo"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stderr == "" and "proportion wrong vs argsort: 0.00" in out.stdout
