"""The simulation's wheel: valid, deterministic, and it installs and runs in a fresh CPython
(the browser test installs it in the vendored Pyodide)."""
import subprocess
import sys
import zipfile

from pages.framework import wheel


def test_the_wheel_is_deterministic_and_lists_every_file(tmp_path):
    name, data = wheel.build()
    assert name == wheel.filename() and name.endswith("-py3-none-any.whl")
    assert wheel.build()[1] == data
    path = tmp_path / name
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        record = zf.read(next(n for n in names if n.endswith("/RECORD"))).decode()
    assert "sim/core/engine.py" in names and "pages/framework/widget.py" in names
    assert "pages/framework/hook.py" not in names
    assert all(n in record for n in names)
    assert any(n.endswith("/LICENSE") for n in names)


def test_the_wheel_installs_and_runs_a_scenario_in_a_clean_python(tmp_path):
    name, data = wheel.build()
    (tmp_path / name).write_bytes(data)
    target = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target),
                    str(tmp_path / name)], check=True)
    code = ("import sim\nfrom sim.studies.scenarios import get_scenario\n"
            "e = get_scenario('fig6').build_engine()\n"
            "e.run()\nprint(sim.__file__)\n"
            "print(e.snapshot(with_slots=False)['gpu']['num_free'])\n")
    # -S: no site-packages, so nothing but the installed wheel provides `sim`.
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(target)})
    assert done.returncode == 0, done.stderr
    where, free = done.stdout.split()
    assert where.startswith(str(target)) and free == "8"
