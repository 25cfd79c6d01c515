import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project (sim, pages) and tests/helpers.py, from any test folder: tests mirror the
# package layout, so two test files may share a name (pytest runs in importlib mode).
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# Marks by place, so a new test is marked without remembering to: `./dev test -m "not browser
# and not build"` runs the fast unit tests alone.
BUILD_MODULES = {"test_hook.py", "test_permalinks.py", "test_docs_build.py"}


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        path = Path(str(item.fspath))
        if "browser" in path.parts:
            item.add_marker(pytest.mark.browser)
        elif path.name in BUILD_MODULES:
            item.add_marker(pytest.mark.build)
