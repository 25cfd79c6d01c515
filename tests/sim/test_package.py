"""sim/__init__.py: the package's own description is its map, and stays true (issue 26: it
still described a simulation of vLLM v0.5.5 only)."""

import re
from pathlib import Path

import sim

SIM = Path(sim.__file__).parent


def test_the_description_names_both_engines():
    doc = sim.__doc__
    assert "v0.5.5" in doc and "V1 engine at v0.25.1" in doc
    assert "v0.5.5's KV-cache management" not in doc


def test_every_path_it_lists_exists_and_every_subpackage_is_listed():
    listed = set(re.findall(r"^    ([a-z_0-9]+(?:/|\.py))", sim.__doc__, re.M))
    assert listed
    assert all((SIM / name.rstrip("/")).exists() for name in listed), listed
    packages = {f"{p.name}/" for p in SIM.iterdir() if (p / "__init__.py").exists()}
    assert packages <= listed
