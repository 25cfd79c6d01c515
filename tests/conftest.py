import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project (sim, pages) and tests/helpers.py, from any test folder: tests mirror the
# package layout, so two test files may share a name (pytest runs in importlib mode).
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
