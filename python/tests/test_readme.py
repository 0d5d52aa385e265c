"""The README's Python example runs as written."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_readmes_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python") :]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "gpuprep.PCA" in block and "pre.save" in block
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    score = float(capsys.readouterr().out.split()[0])
    assert score > 0.9
    assert (tmp_path / "digits-zca.npz").exists()
