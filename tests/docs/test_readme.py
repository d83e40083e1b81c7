"""The README's example runs as printed and reaches the accuracy it implies."""

import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_example_trains_digits(tmp_path):
    example = _python_blocks()[0]
    assert "load_digits" in example
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", done.stdout).group(1))
    assert accuracy >= 0.95


def test_readme_shows_the_two_setup_commands():
    text = README.read_text()
    assert "pip install . && gpunn train" in text
    ci = (README.parent / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && python -m pytest -q'
    assert command in text and command in ci
