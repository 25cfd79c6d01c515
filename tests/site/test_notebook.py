"""examples/notebook.ipynb: every code cell runs in CPython, in order, in one namespace (as a
kernel would run them), and prints what its text says."""
import contextlib
import io
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"


def test_every_code_cell_runs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"], "commit the notebook without outputs"
                exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    text = out.getvalue()
    assert "block table [7, 1]" in text and "block table [7, 1, 3]" in text
    assert "SwappedOut" in text and "free GPU blocks per step:" in text
    assert "frames;" in text
