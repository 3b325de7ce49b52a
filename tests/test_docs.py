"""The README's promises: its Python example runs, and `rnncli --help` stays light."""

import re
import subprocess
import sys

from conftest import ROOT


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].strip() == "pip install . && rnncli run sample_data/sines.npy --units 64 -o states.npy"
    assert blocks[1].strip() == "pip install '.[test]' && pytest && ruff check ."
    assert "pip install '.[test]' && pytest && ruff check ." in (ROOT / ".ci" / "run").read_text()


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = namespace["out"]
    assert out.sequence.shape == (500, 32) and out.final.shape == (32,)
    assert (tmp_path / "states.npy").exists() and (tmp_path / "w.npz").exists()


def test_help_does_not_import_numpy():
    probe = "import sys; from rnncli.cli import main; print(sorted(m for m in ('numpy', 'rich') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_readme_examples_run(tmp_path):
    """Every command of the README's Examples section works as written (from a directory with sample_data/)."""
    import os

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Examples") : text.index("## Input")]
    commands = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(commands) >= 8
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    bin_dir = os.path.dirname(sys.executable)  # the rnncli and python of this environment
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()  # saved weights repeat the run
