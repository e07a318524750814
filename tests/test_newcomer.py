"""A newcomer's first hour, the small things: nothing written for a missing dataset, where digits really come from,
every tool's exit code 2 on bad input, what git ignores, and tests that need an extra skip (or fail under CI)."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from asym.launcher import status

ROOT = Path(__file__).resolve().parent.parent


def test_a_single_run_with_a_missing_dataset_writes_nothing(tmp_path, monkeypatch, capsys):
    """One ``error:`` line and exit code 2 before Hydra makes the run's log directory (runs/logs/<timestamp>/)."""
    from asym import cli
    monkeypatch.chdir(tmp_path)
    for dataset in ("mnist", "cifar10", f"npz:{tmp_path}/none.npz"):
        monkeypatch.setattr(sys, "argv", ["asym-train", f"dataset={dataset}", f"data.root={tmp_path}/nodata",
                                          f"output_root={tmp_path}/runs"])
        with pytest.raises(SystemExit) as exit:
            cli.train()
        assert exit.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "not found" in err[0], err
        assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists(), list(tmp_path.rglob("*"))


def test_the_log_says_digits_come_with_scikit_learn(tmp_path, caplog):
    from asym import cli
    cli._loaded.clear()
    with caplog.at_level(logging.INFO, logger="asym"):
        cli.load_data("digits", str(tmp_path / "data"), 0, False, str(tmp_path / "cache"))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded dataset"))
    assert "scikit-learn" in line and "load_digits" in line and str(tmp_path / "data") not in line, line
    assert cli.data_source("mnist", str(tmp_path / "data")) == str((tmp_path / "data").resolve())
    assert cli.data_source(f"npz:{tmp_path}/x.npz", "data") == str(tmp_path / "x.npz")


def sweep_dir(tmp_path, doc) -> Path:
    d = tmp_path / "runs" / "logs" / "multirun-1"
    d.mkdir(parents=True)
    (d / "runs.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return d


@pytest.mark.parametrize("case", ["nothing there", "an empty folder", "not JSON", "not a plan", "negative watch"])
def test_asym_status_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    args = {"nothing there": [str(tmp_path / "none")], "an empty folder": [str(tmp_path)],
            "not JSON": [str(sweep_dir(tmp_path, "{runs: oops"))] if case == "not JSON" else None,
            "not a plan": [str(sweep_dir(tmp_path, {"runs": []}))] if case == "not a plan" else None,
            "negative watch": [str(tmp_path), "--watch", "-1"]}[case]
    with pytest.raises(SystemExit) as exit:
        status.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), (exit.value.code, err)


def test_git_ignores_what_the_readme_writes():
    """asym-report's page and figures, asym-tables' --out files in the repository's root — but never the paper's
    reference tables shipped in the package, nor a docs page."""
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        conftest.missing_service(f"{ROOT} is not a git work tree")
    ignored = ["report.html", "report_figures/learning_curves_Digits.png", "r_figures/x.svg", "table3.html",
               "table2.tex", "table2.md", "table2.csv", "tables.html"]
    kept = ["asym/reference/table2_experiment_a.csv", "docs/mlflow.md", "README.md", "tests/test_analysis.py"]
    res = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(ignored + kept),
                         capture_output=True, text=True)
    assert sorted(res.stdout.split()) == sorted(ignored), res.stdout


def test_a_missing_extra_skips_with_its_name_outside_ci_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs the \[server\] extra, pip install -e '.\[server\]'"):
        conftest.require("no_such_module_asym", "server")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no_such_module_asym cannot be imported"):
        conftest.require("no_such_module_asym", "server")
    assert conftest.require("json", "server") is json
