"""asym-train's command line: every override form Hydra's basic sweeper accepts, run as in plain Hydra, and every
bad one as one ``error:`` line (exit 2, nothing written) — in this process, through ``asym.cli.train``.

Successful forms run the whole Hydra flow (preflight, hydra.main, the sweeper and its plan, the in-process
launcher) with ``run_one`` recording each job's config instead of training.
"""
import os
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from asym import cli
from conftest import assert_one_error_line, tiny_npz

BASE = ("tracking.uri=sqlite:///mlflow.db", "output_root=runs")   # relative: under the test's own directory


@pytest.fixture
def jobs(monkeypatch, tmp_path):
    """The configs the jobs of an in-process ``asym-train`` receive, in order. ``run_one`` records instead of
    training; the sweeper neither creates the MLflow experiment nor prints tables (there are no runs)."""
    from hydra_plugins.asym_hydra.sweeper import AsymSweeper
    seen = []

    def record(cfg):
        seen.append(flat(OmegaConf.to_container(cfg, resolve=True)))
        return []
    monkeypatch.setattr(cli, "run_one", record)
    monkeypatch.setattr(AsymSweeper, "_create_experiment", lambda self: None)
    monkeypatch.setattr(AsymSweeper, "_print_tables", lambda self, entries: None)
    tiny_npz(tmp_path / "data" / "x=y, #1.npz")
    tiny_npz(tmp_path / "data" / "a,b.npz", seed=1)
    return seen


def flat(node: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in node.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def runs(*wanted: dict) -> tuple:
    """The jobs a form must run: each a dict of the keys to compare (in any order)."""
    return ("runs", list(wanted))


def error(message: str) -> tuple:
    return ("error", message)


ODD = "npz:data/x=y, #1.npz"        # a value holding '=', ',', '#' and spaces
COMMA = "npz:data/a,b.npz"

# every form, and what it must do
FORMS = {
    # a single run
    "value": (["model=BN"], runs({"model": "BN", "seed": 0})),
    "quoted-value-with-=,#-and-spaces": ([f"dataset='{ODD}'"], runs({"dataset": ODD})),
    "double-quoted-value": ([f'dataset="{ODD}"'], runs({"dataset": ODD})),
    "escaped-comma": (["dataset=npz:data/a\\,b.npz"], runs({"dataset": COMMA})),
    "unquoted-=-in-a-value": (["dataset=npz:data/x=y.npz"],
                              error("""cannot parse override 'dataset=npz:data/x=y.npz' (mismatched input '=' """
                                    """expecting <EOF>); quote a value that holds = , # : ( ) [ ] { } quotes or """
                                    """spaces: 'dataset="npz:data/x=y.npz"'""")),
    "unquoted-#": (["model=uSF#x"], error("cannot parse override 'model=uSF#x'")),
    "no-equals": (["model"], error("cannot parse override 'model' (missing EQUAL at '<EOF>'); an override is "
                                   "key=value")),
    "++-existing-key": (["++seed=3"], runs({"seed": 3})),
    "+-existing-key": (["+seed=3"], error("'+seed' adds a key the config already has; write seed=… (or ++seed=…")),
    "+-new-key": (["+modle=SGD"], error("unknown config key 'modle' (did you mean 'model'?) (added by +/++ "
                                        "or a config file; no run reads it)")),
    "++-new-key-in-a-section": (["++train.epohcs=3"], error("unknown config key 'train.epohcs' (did you mean "
                                                            "'train.epochs'?)")),
    "+-group": (["+sweep=demo"], runs({"model": "SGD", "train.epochs": 4, "tables": ["2"]})),
    "group-not-in-defaults": (["sweep=demo"], error("sweep=demo: no 'sweep' in the defaults list to override: add "
                                                    "it with +sweep=demo")),
    "~-needed-key": (["~seed"], error("~seed deletes a key every run needs; set it instead (seed=…)")),
    "~-nested-key": (["~train.epochs"], error("~train.epochs: TrainConf (DictConfig) does not support deletion: "
                                              "set it instead (train.epochs=…)")),
    "~-absent-key": (["~nokey"], error("Could not delete from config. 'nokey' does not exist")),
    "~-group": (["~train"], runs({"train.epochs": 65})),     # the schema's defaults: the paper's protocol
    "list-value": (["lr_mults=[10,1]", "engine=group"], runs({"lr_mults": [10.0, 1.0], "engine": "group"})),
    "sweep-without--m": (["model=SGD,BN"], error("model=SGD,BN is a sweep (several values): add -m to run each; "
                                                 "for one value that holds a comma quote it, 'model=\"SGD,BN\"'; for "
                                                 "a list write model=[SGD,BN]")),
    "range-without--m": (["lr_mult=range(1,3)"], error("lr_mult=range(1,3) is a sweep (several values): add -m")),
    "interval": (["lr_mult=interval(0.1,1)"], error("lr_mult=interval(0.1,1) is a continuous interval, not a grid")),
    # a sweep
    "-m-list": (["-m", "model=SGD,BN"], runs({"model": "SGD"}, {"model": "BN"})),
    "-m-range": (["-m", "lr_mult=range(1,4)"], runs({"lr_mult": 1.0}, {"lr_mult": 2.0}, {"lr_mult": 3.0})),
    "-m-choice": (["-m", "lr_mult=choice(10,1)"], runs({"lr_mult": 10.0}, {"lr_mult": 1.0})),
    "-m-shuffle": (["-m", "model=shuffle(SGD,BN,BM)"], runs({"model": "SGD"}, {"model": "BN"}, {"model": "BM"})),
    "-m-sort": (["-m", "lr_mult=sort(10,1,100)"], runs({"lr_mult": 1.0}, {"lr_mult": 10.0}, {"lr_mult": 100.0})),
    "-m-glob-over-train": (["-m", "train=glob(*)"], runs({"train.epochs": 4}, {"train.epochs": 65})),
    "-m-glob-over-sweep-files": (["-m", "+sweep=glob(table4*)", "model=SGD", "dataset=digits", "lr_mult=10"],
                                 runs({"freeze": "none"}, {"freeze": "bottom"}, {"freeze": "top"})),
    "-m-list-of-sweep-files": (["-m", "+sweep=table2,table3", "model=SGD,BN", "dataset=digits", "lr_mult=10"],
                               runs({"model": "SGD"}, {"model": "BN"})),     # shared by both tables: once each
    "-m-quoted-and-escaped-values": (["-m", f"dataset='{ODD}',npz:data/a\\,b.npz"],
                                     runs({"dataset": ODD}, {"dataset": COMMA})),
    "-m-++-sweep-and-choice": (["-m", "++lr_mult=1,10", "++seed=choice(0,1)"],
                               runs(*({"lr_mult": m, "seed": s} for m in (1.0, 10.0) for s in (0, 1)))),
    "-m-seeds": (["-m", "model=SGD,BN", "seeds=2"], runs(*({"model": m, "seed": s} for s in (0, 1)
                                                           for m in ("SGD", "BN")))),
    "-m-duplicate-values": (["-m", "lr_mult=10,10.0"], runs({"lr_mult": 10.0})),
    "-m-~-needed-key": (["-m", "~seed", "model=SGD,BN"], error("~seed deletes a key every run needs")),
    "-m-~-group": (["-m", "~train", "model=SGD,BN"], runs({"model": "SGD", "train.epochs": 65},
                                                          {"model": "BN", "train.epochs": 65})),
    "-m-+-existing-key": (["-m", "+seed=0,1"], error("'+seed' adds a key the config already has")),
    "-m-interval": (["-m", "lr_mult=interval(0.1,1)"], error("lr_mult=interval(0.1,1) is a continuous interval, "
                                                             "not a grid: asym-train -m runs the values it lists")),
    "-m-unquoted-=-in-a-value": (["-m", "dataset=npz:data/x=y.npz"], error("cannot parse override "
                                                                           "'dataset=npz:data/x=y.npz'")),
    "-m-glob-matching-nothing": (["-m", "+sweep=glob(tabel*)"], error("+sweep=glob(tabel*) selects no sweep file; "
                                                                      "choose from demo, paper, table2")),
    "-m-glob-over-a-bad-group": (["-m", "train=glob(*)", "train=nope"], error("no train config 'nope'; choose from "
                                                                              "demo, paper")),
    "-m-sweep-of-hydra": (["-m", "hydra.job.chdir=true,false"], error("Sweeping over Hydra's configuration is not "
                                                                       "supported")),
    "-m-empty-sweep": (["-m", "+sweep=demo", "model=SGD", "procedure=large_batch"], error("this sweep has no runs")),
}


@pytest.mark.parametrize("args,outcome", FORMS.values(), ids=FORMS.keys())
def test_every_override_form(asym_train, jobs, tmp_path, args, outcome):
    res = asym_train(*args, *BASE)
    kind, want = outcome
    if kind == "error":
        assert_one_error_line(res, want, tmp_path, keep=("data",))
        assert jobs == []
        return
    assert res.returncode == 0, res.stderr[-3000:]
    got = [{k: job.get(k, "<absent>") for k in w} for job, w in zip(jobs, want)]
    assert len(jobs) == len(want) and sorted(map(repr, got)) == sorted(map(repr, want)), jobs


# issue 20's report: each of these ran into a traceback, or lost its override (the last); ``extra`` keeps a
# sweep small (a grid on the offline digits set)
REPORTED = {
    "glob-over-sweep-files": (["-m", "+sweep=glob(table*)"], ["model=SGD", "dataset=digits", "lr_mult=10"],
                              ("runs", 3)),      # HydraException: ConfigLoader is not set
    "glob-over-train": (["-m", "train=glob(*)"], ["model=SGD"], ("runs", 2)),           # the same
    "delete-seed-in-a-sweep": (["-m", "~seed", "model=SGD,BM"], [],                      # ConfigKeyError (plan)
                               ("error", "~seed deletes a key every run needs")),
    "interval": (["-m", "lr_mult=interval(0.1,1)"], [],                                  # BasicSweeper does not
                 ("error", "lr_mult=interval(0.1,1) is a continuous interval, not a grid")),  # support sweep type
    "m-with-cfg": (["-m", "--cfg", "job", "model=SGD,BM"], [],                           # ValueError: Only one of
                   ("shows", "# asym-train -m: 2 runs; below, the first one's: model=SGD")),  # --run, --multirun…
    "unquoted-equals": (["dataset=npz:x=y.npz"], [],                                     # mismatched input '='
                        ("error", """'dataset=npz:x=y.npz' (mismatched input '=' expecting <EOF>); quote a value """
                                  """that holds = , # : ( ) [ ] { } quotes or spaces: 'dataset="npz:x=y.npz"'""")),
}


@pytest.mark.parametrize("form,extra,outcome", REPORTED.values(), ids=REPORTED.keys())
def test_forms_that_were_tracebacks_now_run_or_say_one_line(asym_train, jobs, tmp_path, form, extra, outcome):
    """Each runs as in plain Hydra, shows its first job, or is one line naming the override and the remedy."""
    res = asym_train(*form, *extra, *BASE)
    assert "Traceback" not in res.stderr and "Exception" not in res.stderr, res.stderr
    kind, want = outcome
    if kind == "error":
        assert_one_error_line(res, want, tmp_path, keep=("data",))
    elif kind == "shows":
        assert res.returncode == 0 and res.stdout.startswith(want), res.stdout[:500] + res.stderr[-2000:]
    else:
        assert res.returncode == 0 and len(jobs) == want, res.stderr[-3000:]


def test_a_sweep_over_all_table_files_is_the_papers_union(asym_train, tmp_path):
    """``-m '+sweep=glob(table*)'``: the union of Tables 2–5's grids, each shared run once — the paper's 2,700
    runs (``-m --cfg job`` plans it without data and shows the first)."""
    res = asym_train("-m", "--cfg", "job", "+sweep=glob(table*)", *BASE)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("# asym-train -m: 2700 runs; below, the first one's: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("show,check", [
    (["--cfg", "job"], lambda out, doc: doc["model"] == "SGD" and "hydra" not in doc),
    (["--cfg", "hydra"], lambda out, doc: set(doc) == {"hydra"} and doc["hydra"]["job"]["name"] == "asym"),
    (["--cfg", "all"], lambda out, doc: doc["model"] == "SGD" and "hydra" in doc),
    (["--cfg", "job", "--package", "train"], lambda out, doc: "# @package train" in out and doc["epochs"] == 4),
    (["--cfg", "job", "--resolve"], lambda out, doc: doc["output_root"] == "runs"),
    (["--info", "defaults"], lambda out, doc: "Defaults List" in out and "train/demo" in out),
    (["--info", "config"], lambda out, doc: "Config" in out and "model: SGD" in out),
    (["--help"], lambda out, doc: "-m with --cfg, --info or --help" in out and "model: SGD" in out),
])
def test_show_commands_with_m_show_the_first_job_and_the_count(asym_train, tmp_path, show, check):
    """Plain Hydra refuses ``-m --cfg``; asym-train plans the sweep (every job checked, nothing written) and
    shows its first job, after a comment line with the number of runs and that job's overrides."""
    res = asym_train("-m", *show, "model=SGD,BN", "lr_mult=10,1", "train=demo", *BASE)
    assert res.returncode == 0, res.stderr[-3000:]
    head, _, body = res.stdout.partition("\n")
    assert head.startswith("# asym-train -m: 4 runs; below, the first one's: model=SGD lr_mult=10 train=demo")
    doc = yaml.safe_load(body) if show[0] == "--cfg" else None
    assert check(body, doc), res.stdout[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a show command wrote something"


@pytest.mark.parametrize("show", [["--cfg", "job"], ["--info", "config"], ["--help"]])
def test_show_commands_without_m_are_hydras(asym_train, tmp_path, show):
    res = asym_train(*show, "model=BN", *BASE)
    assert res.returncode == 0 and not res.stdout.startswith("#"), res.stderr[-2000:]
    assert "BN" in res.stdout and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["-m", "--cfg", "job", "modle=SGD,BN"], "unknown config key 'modle' (did you mean 'model'?)"),
    (["-m", "--help", "lr_mult=-1,1"], "lr_mult must be a positive number"),
    (["--cfg", "job", "model=SGD,BN"], "model=SGD,BN is a sweep (several values): add -m"),
    (["--run", "-m", "model=SGD"], "--run and --multirun together: choose one"),
    (["--cfg", "job", "--info", "config"], "--cfg and --info together: choose one"),
    (["--resolve", "model=SGD"], "--resolve goes with --cfg or --help"),
    (["--config-dir", "nowhere", "model=SGD"], "--config-dir nowhere: no such directory"),
])
def test_bad_show_commands_and_flags_are_one_line(asym_train, tmp_path, args, message):
    assert_one_error_line(asym_train(*args, *BASE), message, tmp_path)


def test_a_config_dir_adds_sweep_files(asym_train, jobs, tmp_path):
    """``-cd DIR`` (Hydra's --config-dir) is composed as hydra.main composes it: its sweep files are options."""
    (tmp_path / "mine" / "sweep").mkdir(parents=True)
    (tmp_path / "mine" / "sweep" / "two.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      model: SGD,BN\n")
    res = asym_train("-cd", "mine", "-m", "+sweep=two", *BASE)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(j["model"] for j in jobs) == ["BN", "SGD"]


def test_a_bad_override_is_one_line_before_torch_is_imported(tmp_path):
    """In a fresh interpreter: ``asym-train`` with a bad override, single run or sweep (``-m``), prints its line and
    exits 2 without importing torch (the one subprocess of this file: what matters is what a new process imports)."""
    code = ("import sys\nfrom asym import cli\nsys.argv = ['asym-train', *sys.argv[1:]]\n"
            "try:\n    cli.train()\nfinally:\n    print('torch' in sys.modules, file=sys.stdout)\n")
    for bad in ("modle=SGD", "lr_mult=-1", "train.device=gpu", "dataset=npz:x=y.npz", "-m modle=SGD,BM",
                "-m model=SGD,XX", "-m lr_mult=interval(0.1,1)", "-m +sweep=nosuch"):
        res = subprocess.run([sys.executable, "-c", code, *bad.split(), "output_root=runs"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert res.returncode == 2 and res.stderr.startswith("error: "), res.stderr
        assert res.stdout.strip() == "False", f"{bad}: torch was imported before the error line"
