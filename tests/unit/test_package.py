"""The installable package (issue 26): pyproject.toml, the ``spatialmap`` entry point, the version.

pyproject.toml builds ``bin/spatialmap`` (tools/setup.sh installs it, editable, into the project's
virtualenv); ``spatialmap <command>`` and ``python -m spatialmap <command>`` run the modules of
``spatialmap.scripts``, the same code as ``bin/<name>.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

import spatialmap
from conftest import BIN
from spatialmap import scripts

REPO = BIN.parent


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_version_is_the_pipelines_manifest_version():
    config = (REPO / "nextflow.config").read_text()
    manifest = config[config.index("manifest {") :]
    version = re.search(r"^\s*version\s*=\s*'([^']+)'", manifest, re.M).group(1)
    assert spatialmap.__version__ == version


def test_pyproject_builds_the_package_under_bin_with_its_entry_point():
    project = _pyproject()
    assert project["project"]["name"] == "spatialmap"
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["project"]["dependencies"] == []  # the environment is requirements.lock (see the comment)
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "spatialmap.__version__"}
    assert project["tool"]["setuptools"]["packages"]["find"] == {"where": ["bin"], "include": ["spatialmap*"]}
    assert project["project"]["scripts"] == {"spatialmap": "spatialmap.scripts:main"}
    assert set(project["tool"]["pytest"]["ini_options"]["pythonpath"]) == {"bin", "tools"}
    # package data: nothing but .py files in the package, so none to declare
    data = [
        p for p in (BIN / "spatialmap").rglob("*") if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert not data, data


def test_the_commands_are_the_script_modules():
    assert scripts.commands() == {p.stem.replace("_", "-"): p.stem for p in sorted(BIN.glob("*.py"))}
    assert scripts.commands()["map-rctd"] == "map_rctd"


def test_help_lists_every_command_with_its_description(capsys):
    assert scripts.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spatialmap <command>")
    for command in scripts.commands():
        assert re.search(rf"^  {command} +\S", out, re.M), command
    assert "Check the samplesheet and write it back with absolute paths." in out


def test_a_command_runs_its_script_under_the_commands_name(capsys):
    argv0 = sys.argv[0]
    with pytest.raises(SystemExit) as exit_:
        scripts.main(["map-nnls", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spatialmap map-nnls [-h] --slide SLIDE")
    assert "Deconvolve one slide with the NNLS baseline" in out  # the script's own --help text
    assert sys.argv[0] == argv0


def test_a_user_error_exits_1_with_one_line_as_the_script_does(tmp_path, capsys):
    missing = tmp_path / "missing.csv"
    with pytest.raises(SystemExit) as exit_:
        scripts.main(["check-samplesheet", str(missing)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"ERROR: samplesheet '{missing}' does not exist\n"


@pytest.mark.parametrize(("argv", "status"), [([], 2), (["no-such-command"], 2), (["--version"], 0)])
def test_usage_errors_and_version(argv, status, capsys):
    assert scripts.main(argv) == status
    captured = capsys.readouterr()
    if argv == ["--version"]:
        assert captured.out == f"spatialmap {spatialmap.__version__}\n"
    else:
        assert captured.err.startswith("usage: spatialmap") or "unknown command 'no-such-command'" in captured.err


def test_python_m_spatialmap_and_a_shim_run_from_the_checkout():
    """``python -m spatialmap`` (from bin/) and a bin/ shim, as Nextflow runs it: no path set, no warning."""
    run = subprocess.run([sys.executable, "-m", "spatialmap", "--version"], cwd=BIN, capture_output=True, text=True)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"spatialmap {spatialmap.__version__}\n", "")
    run = subprocess.run(
        [sys.executable, str(BIN / "check_samplesheet.py"), "--help"], cwd="/", capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.startswith("usage: check_samplesheet.py") and run.stderr == ""


def test_a_script_of_another_checkout_is_warned_about(tmp_path, monkeypatch, capsys):
    """The shared virtualenv's editable install points at one checkout: a tool of another one warns."""
    monkeypatch.setattr(sys, "argv", [str(REPO / "tools" / "make_test_data.py")])
    spatialmap._check_checkout()
    assert capsys.readouterr().err == ""  # this checkout's tool, this checkout's package
    other = tmp_path / "other"
    (other / "bin" / "spatialmap").mkdir(parents=True)
    (other / "bin" / "spatialmap" / "__init__.py").write_text("")
    for script in (other / "tools" / "x.py", other / "tests" / "workflow" / "x.py", other / "bin" / "x.py"):
        monkeypatch.setattr(sys, "argv", [str(script)])
        spatialmap._check_checkout()
        err = capsys.readouterr().err
        assert err.startswith(f"WARNING: {script} is in the checkout {other} but runs with the spatialmap package")
        assert f"bash {other}/tools/setup.sh" in err
    for argv in ([str(tmp_path / "x.py")], ["-c"], [""], []):  # outside any checkout; python -c; the REPL
        monkeypatch.setattr(sys, "argv", argv)
        spatialmap._check_checkout()
    assert capsys.readouterr().err == ""
