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
