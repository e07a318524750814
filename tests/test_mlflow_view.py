"""What the MLflow UI shows about a run: its dataset (an MLflow dataset input), a one-line description of its
model (MLflow's note), the tables it feeds and its protocol's hash; MLflow's system metrics when asked."""
import os
import subprocess
import uuid
from dataclasses import asdict
from importlib import resources

import pytest
import yaml

from asym import data, study, tracking
from asym.models import parse_model
from asym.protocol import Protocol


def paper_models() -> set[str]:
    """Every model label the paper's tables print (asym.study), as printed (BM1 as well as BM)."""
    return {c.partition("/")[0] for t in study.TABLES.values() for c in t.columns}


def test_every_model_of_the_paper_is_described_from_its_parse():
    labels = paper_models() | {"uSF+BN+BM3", "RndF", "frSF-p25+BN+BM"}
    assert len(labels) > 20
    described = {label: tracking.describe_model(label) for label in labels}
    assert len({parse_model(l).label for l in labels}) == len(set(described.values())), "two models read the same"
    assert described["uSF+BN+BM"] == ("uSF+BN+BM: feedback V = sign(W); batch normalisation without affine; "
                                      "Batch Manhattan setting 1")
    assert described["BN+BM"].startswith("BN+BM: feedback V = W") and "learnable scale/shift" in described["BN+BM"]
    assert "probability 0.5" in described["brSF-p50+BN+BM"] and "redrawn every mini-batch" in described["brSF-p50+BN+BM"]
    assert "probability 0.25" in described["frSF-p25+BN+BM"] and "drawn once" in described["frSF-p25+BN+BM"]
    assert "N(0, 0.05²)" in described["RndF"] and "no batch normalisation" in described["RndF"]
    assert described["SGD"].endswith("SGD with momentum (update setting 0)")
    assert described["uSF+BN+BM3"].endswith("Batch Manhattan setting 3")
    assert tracking.describe_model("BM1") == described["BM"]  # the label's parse, not its spelling


def test_tables_and_protocol_tags():
    paper, demo = asdict(Protocol()), asdict(Protocol(epochs=4, lr_steps=[2, 3]))
    tags = tracking.view_tags({"model": "brSF-p50+BN+BM", "freeze": "none", "procedure": "standard"}, paper)
    assert tags[tracking.TABLES_TAG] == "3"
    assert tracking.view_tags({"model": "SGD", "freeze": "none"}, paper)[tracking.TABLES_TAG] == "2,3,4c1,5"
    assert tracking.view_tags({"model": "SGD", "freeze": "top"}, paper)[tracking.TABLES_TAG] == "4c2"
    assert tags[tracking.PROTOCOL_TAG] == tracking.protocol_hash(paper) != tracking.protocol_hash(demo)
    clamped = tracking.describe_run({"model": "SGD", "freeze": "bottom", "procedure": "standard"}, paper)
    assert clamped.endswith("clamped: last layer frozen at its random init")
    large = tracking.describe_run({"model": "uSF+BM", "freeze": "none", "procedure": "large_batch"}, paper)
    assert large.endswith("batch 100 for 3 epochs, then 500")


@pytest.mark.slow
def test_runs_carry_dataset_description_tables_and_system_metrics(mlflow_server, tmp_path):
    exp, root = f"view-{uuid.uuid4().hex[:8]}", tmp_path / "runs"
    where = [f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}", f"output_root={root}"]
    env = {**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    single = subprocess.run(["asym-train", "model=uSF+BN+BM", "dataset=digits", "train=demo", "train.epochs=2",
                             "tracking.system_metrics=true", *where], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    group = subprocess.run(["asym-train", "-m", "engine=group", "model=SGD", "lr_mult=10,1", "dataset=digits",
                            "train=demo", "train.epochs=1", *where], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert group.returncode == 0, group.stderr[-3000:]
    c = tracking.client(mlflow_server)
    runs = {r.info.run_name: r for r in c.search_runs([c.get_experiment_by_name(exp).experiment_id])}
    assert set(runs) == {"Digits · uSF+BN+BM · lr×1", "Digits · SGD · lr×10", "Digits · SGD · lr×1"}
    digest = tracking.dataset_digest(data.load("digits", str(tmp_path / "data"), seed=0))
    for name, run in runs.items():
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1, name
        ds = inputs[0].dataset
        assert (ds.name, ds.digest, ds.source_type) == ("digits", digest, "code"), name
        assert "sklearn.datasets.load_digits" in ds.source
        assert run.data.tags[tracking.NOTE_TAG] == tracking.describe_model(run.data.tags["model"])
        assert run.data.tags[tracking.PROTOCOL_TAG] == tracking.protocol_hash(
            {**asdict(Protocol()), "epochs": 2 if "uSF" in name else 1, **demo_protocol_overrides()})
    assert runs["Digits · uSF+BN+BM · lr×1"].data.tags[tracking.TABLES_TAG] == "2,4c1,5"
    assert runs["Digits · SGD · lr×1"].data.tags[tracking.TABLES_TAG] == "2,3,4c1,5"
    # "Table 3, this protocol" is one filter
    hits = c.search_runs([runs["Digits · SGD · lr×1"].info.experiment_id], filter_string=(
        f"tags.tables LIKE '%3%' AND tags.protocol_hash = '{runs['Digits · SGD · lr×1'].data.tags['protocol_hash']}'"))
    assert {r.info.run_name for r in hits} == {"Digits · SGD · lr×10", "Digits · SGD · lr×1"}
    # system metrics: only where asked (tracking.system_metrics=true), off by default
    assert "system/cpu_utilization_percentage" in runs["Digits · uSF+BN+BM · lr×1"].data.metrics
    assert not [k for k in runs["Digits · SGD · lr×1"].data.metrics if k.startswith("system/")]


def demo_protocol_overrides() -> dict:
    """conf/train/demo.yaml's protocol keys (the demo shrinks the paper's schedule)."""
    demo = yaml.safe_load((resources.files("asym.conf") / "train" / "demo.yaml").read_text())
    return {k: v for k, v in demo.items() if k in Protocol.__dataclass_fields__ and k != "epochs"}
