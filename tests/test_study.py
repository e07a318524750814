"""The study's one owner (asym.study): the sweep files, the paper's reference numbers, the claims, the protocol's
config and ``python -m asym.train`` all agree with it, and the training-set sizes follow the data registry's rule."""
import itertools
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from asym import data, study, tracking
from asym.labels import parse_model
from asym.protocol import PROCEDURES, Protocol

REPO = Path(__file__).resolve().parents[1]
SWEEPS = {t.sweep: t for t in study.TABLES.values()}


def sweep_file(name: str):
    return OmegaConf.create((resources.files("asym.sweeps") / f"{name}.yaml").read_text())


def params(name: str) -> dict[str, list]:
    """A sweep file's axes, each value as Hydra's override parser reads it."""
    sweeper = sweep_file(name).hydra.sweeper
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    return {o.key_or_group: list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()] for o in parsed}


def grid(name: str) -> list[tuple]:
    """The runs a sweep file describes: the cartesian product of its axes less the combinations its
    ``only_for_models`` rules out ("``key=value`` only for these models"), as canonical run identities."""
    axes = params(name)
    rules = sweep_file(name).hydra.sweeper.get("only_for_models", {})
    only = {k: {parse_model(m).label for m in v} for k, v in rules.items()}
    out = []
    for values in itertools.product(*axes.values()):
        job = dict(zip(axes, values))
        model = parse_model(job["model"]).label
        if any(f"{k}={v}" in only and model not in only[f"{k}={v}"] for k, v in job.items()):
            continue
        out.append((model, job["dataset"], float(job["lr_mult"]), job.get("freeze", "none"),
                    job.get("procedure", "standard")))
    return out


def identities(runs) -> list[tuple]:
    return [(r.model, r.dataset, float(r.lr_mult), r.freeze, r.procedure) for r in runs]


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_each_table_sweep_runs_exactly_the_studys_runs_of_its_table(name):
    table = SWEEPS[name]
    axes, runs = params(name), grid(name)
    models = list(dict.fromkeys(study.column_run(c)[0] for c in table.columns))
    assert [parse_model(m).label for m in axes["model"]] == models       # the columns' order
    assert axes["dataset"] == list(table.datasets)                       # the rows' order
    assert [float(m) for m in axes["lr_mult"]] == [float(m) for m in study.LR_MULTIPLIERS]
    assert len(runs) == len(set(runs)), "the sweep launches a run twice"
    assert set(runs) == set(identities(table.runs()))
    assert table.key in study.table_keys(list(sweep_file(name).tables))  # it prints its own table at the end


def test_the_paper_sweep_is_every_run_of_the_study_once():
    axes, runs = params("paper"), grid("paper")
    assert axes["dataset"] == list(study.PAPER_DATASETS)
    assert [float(m) for m in axes["lr_mult"]] == [float(m) for m in study.LR_MULTIPLIERS]
    assert axes["procedure"] == list(PROCEDURES) and axes["freeze"] == ["none", *study.CLAMPS]
    only = sweep_file("paper").hydra.sweeper.only_for_models
    assert list(only["procedure=large_batch"]) == list(study.TWO_PROCEDURE_MODELS)
    assert all(list(only[f"freeze={side}"]) == list(study.CLAMPED_MODELS) for side in study.CLAMPS)
    assert len(runs) == len(set(runs)) == 2700  # 27 models × 75, uSF+BM's second procedure × 75, C2's 8 × 75
    assert set(runs) == set(identities(study.paper_runs()))
    assert study.table_keys(list(sweep_file("paper").tables)) == list(study.TABLES)


def test_the_demo_sweep_is_table_2_on_digits_at_some_of_the_multipliers():
    axes = params("demo")
    assert [parse_model(m).label for m in axes["model"]] == [study.column_run(c)[0] for c in study.TABLES["2"].columns]
    assert axes["dataset"] == ["digits"] and {float(m) for m in axes["lr_mult"]} <= set(study.LR_MULTIPLIERS)


@pytest.mark.parametrize("key", list(study.TABLES))
def test_the_papers_numbers_have_the_studys_columns_and_rows(key):
    """The reference CSVs keep the paper's headers; they must be the study's columns, and their rows the study's
    rows in order (Table 5: the paper prints only the first six)."""
    table = study.TABLES[key]
    paper = table.paper()
    assert list(paper.columns) == list(table.columns)
    titles = [data.DATASETS[n].title for n in table.datasets]
    assert list(paper.index) == titles[:len(paper)] and len(paper) == (6 if key == "5" else 15)


def test_columns_map_to_runs_and_runs_to_tables():
    assert study.column_run("BM1") == ("BM", "none") and study.column_run("SGD/top") == ("SGD", "top")
    assert study.tables_of("SGD") == ["2", "3", "4c1", "5"] and study.tables_of("SGD", "top") == ["4c2"]
    assert study.tables_of("uSF+BN+BM1") == ["2", "4c1", "5"] and study.tables_of("BM2") == ["5"]
    assert study.flip_column("frSF", 0) == "frSF+BN+BM" and study.flip_column("brSF", 25) == "brSF-p25+BN+BM"
    assert study.procedures_for("uSF+BM") == PROCEDURES and study.procedures_for("uSF+BM", "top") == ("standard",)
    assert [len(t.runs()) for t in study.TABLES.values()] == [12 * 75, 11 * 75, 8 * 75, 8 * 75, 8 * 75]
    with pytest.raises(ValueError, match="choose from 2, 3, 4, 4c1, 4c2, 5, all"):
        study.table_keys("6")


# ---------------------------------------------------------------------------------------- training-set sizes


def test_training_set_sizes_follow_the_registrys_split_rule():
    """Per-class protocols: classes × training images per class; the Flowers sets train on train + val of their
    split files (17·60 and 102·20); iCub's folders fix no size."""
    for name, (classes, per_class, _) in data.CLASS_PROTOCOLS.items():
        assert study.TRAIN_SIZE[name] == classes * per_class
    assert study.TRAIN_SIZE["flowers17"] == 17 * 60 == 1020
    assert study.TRAIN_SIZE["flowers102"] == 102 * 20 == 2040
    assert study.TRAIN_SIZE["mnist"] == 60000 and study.TRAIN_SIZE["timit80"] == 80 * 400
    assert "icub" not in study.TRAIN_SIZE and study.train_size("icub") is None
    assert set(study.TRAIN_SIZE) == set(data.DATASETS) - {"icub"}


def test_the_flowers17_listing_trains_on_what_the_study_counts(tmp_path):
    """Oxford VGG's layout, full size (1,360 images, datasplits.mat split 1 with 40/20/20 per class): the listing
    the reader decodes holds the study's number of training images."""
    from scipy.io import savemat
    folder = tmp_path / "flowers17"
    (folder / "jpg").mkdir(parents=True)
    for i in range(1, 17 * 80 + 1):
        (folder / "jpg" / f"image_{i:04d}.jpg").touch()
    ids = lambda lo, hi: np.array([[c * 80 + k for c in range(17) for k in range(lo, hi)]])  # 1-based, per class
    savemat(folder / "datasplits.mat", {"trn1": ids(1, 41), "val1": ids(41, 61), "tst1": ids(61, 81)})
    detail = data.survey("flowers17", tmp_path).detail
    assert detail == f"17 classes, {study.TRAIN_SIZE['flowers17']}/340 images"


def test_the_flowers102_listing_trains_on_what_the_study_counts(tmp_path):
    """setid.mat as Oxford VGG ships it (trnid and valid 10 per class, tstid the rest; 40 images a class here): the
    listing the reader decodes holds the study's number of training images, 20 of each class."""
    from scipy.io import savemat

    from asym.data import sources
    folder = tmp_path / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    per_class = 40
    for i in range(1, 102 * per_class + 1):
        (folder / "jpg" / f"image_{i:05d}.jpg").touch()
    ids = lambda lo, hi: np.array([[c * per_class + k for c in range(102) for k in range(lo, hi)]])
    savemat(folder / "imagelabels.mat", {"labels": np.repeat(np.arange(1, 103), per_class)[None]})
    savemat(folder / "setid.mat", {"trnid": ids(1, 11), "valid": ids(11, 21), "tstid": ids(21, per_class + 1)})
    train, test, _ = sources._flowers102_listing(data.info("flowers102"), folder)
    assert len(train) == study.TRAIN_SIZE["flowers102"] and len(test) == 102 * 20
    assert sorted(np.bincount([y for _, y in train]).tolist()) == [20] * 102


def test_the_digits_demo_trains_on_what_the_study_counts():
    d = data.load("digits")
    assert len(d.y_train) == study.TRAIN_SIZE["digits"]


# ---------------------------------------------------------------------------------------- written once


def test_the_paper_protocol_is_written_once():
    """conf/train/paper.yaml sets no value (the schema's defaults are Protocol's) and composes to Protocol()."""
    from asym.config import TrainConf, train_option
    node = OmegaConf.create((resources.files("asym.conf") / "train" / "paper.yaml").read_text())
    assert set(node) == {"defaults"}
    assert train_option("paper") == Protocol()
    assert TrainConf().protocol() == Protocol()


def test_python_m_asym_train_takes_its_defaults_from_the_protocol(tmp_path, monkeypatch):
    """argparse's defaults are read from Protocol(): a protocol with other defaults changes them."""
    from asym import train

    @dataclass
    class Other(Protocol):
        epochs: int = 7
        lr_steps: list[int] = field(default_factory=lambda: [3, 5])

    got = {}
    monkeypatch.setattr(train, "Protocol", Other)
    monkeypatch.setattr(train.datasets, "load", lambda *a, **k: "the data")
    monkeypatch.setattr(train, "train", lambda runs, d, outs, proto, **kw: got.update(proto=proto) or [])
    assert train.main(["SGD", "digits", "1", str(tmp_path)]) == 0
    assert asdict(got["proto"]) == asdict(Other())


def test_the_experiment_name_is_written_once():
    """Code, configs, CI scripts and tests read ``asym.tracking.DEFAULT_EXPERIMENT``."""
    folders = ("asym", "conf", "sweeps", "launcher", "analysis", "hydra_plugins", "benchmarks", "tests", ".ci")
    where = [p.relative_to(REPO).as_posix() for folder in folders for p in sorted((REPO / folder).rglob("*"))
             if p.suffix in (".py", ".yaml", ".sh", "") and p.is_file()
             and tracking.DEFAULT_EXPERIMENT in p.read_text(errors="replace")]
    assert where == ["asym/tracking.py"]
    from asym.config import TrackingConf
    assert TrackingConf().experiment == tracking.DEFAULT_EXPERIMENT


def test_analysis_reads_the_exp_b_probabilities_and_sizes_from_the_study():
    from asym.analysis import claims, figures
    assert figures.FLIP_P is study.FLIP_P
    assert claims.ROW_TRAIN_SIZE == {data.DATASETS[n].title: s for n, s in study.TRAIN_SIZE.items()}
    assert re.search(r"\bFlowers17 \(1020\)", claims.evaluate(claims.paper_tables())["VIb"].detail)
