"""The MLflow UI in a real headless Chromium on a fresh profile, as a newcomer sees it.

- A local study, made as the README makes it (``asym-train -m`` in a folder, MLflow in ``./mlflow.db``), served by the
  README's ``mlflow ui`` command: the README's link opens on the runs table, not on MLflow 3's GenAI overview; each
  sweep is a run whose tables render in the artifact view; run names are measured against their cells.
- A real server (basic-auth): runs listed by readable name with their dataset, a run's description, a val_error curve.

Screenshots go to test-output/ ($ASYM_TEST_OUTPUT; .ci/run keeps them as CI artifacts).
"""
import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from asym import tracking
from asym.analysis.tables import TABLES, column_run
from conftest import missing_service, wait_until

# one browser and one sweep fixture (module-scoped) for the whole file: its tests run on one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow-ui")]
ROOT = Path(__file__).resolve().parent.parent
# a fresh, quiet browser: no profile, no first-run pages, no background traffic
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1400, "height": 1000}
NAME_CELL = '[role=gridcell][col-id="attributes.`Run Name`"]'
# Per name cell: its text, the text's natural width, and the room its cell leaves it (from the link's left edge to
# the right edge of the cell's content box): the UI's own layout, measured, not guessed
MEASURE_NAMES = """() => [...document.querySelectorAll('%s')].map(cell => {
    const a = cell.querySelector('a'), range = document.createRange(); range.selectNodeContents(a);
    const box = cell.getBoundingClientRect(), style = getComputedStyle(cell), font = getComputedStyle(a);
    return {text: a.innerText, width: range.getBoundingClientRect().width,
            room: box.right - parseFloat(style.paddingRight) - parseFloat(style.borderRightWidth)
                  - a.getBoundingClientRect().left,
            font: `${font.fontStyle} ${font.fontWeight} ${font.fontSize} ${font.fontFamily}`}; })""" % NAME_CELL
TEXT_WIDTHS = """([font, texts]) => { const c = document.createElement('canvas').getContext('2d'); c.font = font;
    return texts.map(t => c.measureText(t).width); }"""
DEMO = {"models": TABLES["2"].columns, "mults": (100, 10, 1)}   # sweeps/demo.yaml


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        missing_service("no Chromium installed (apt-get install chromium)")
    return path


@contextmanager
def fresh_browser(chromium: str, **context):
    """A headless Chromium with a new, empty user-data directory (nothing remembered from an earlier visit)."""
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix="asym-chromium-") as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=CHROMIUM_FLAGS,
                                                       headless=True, viewport=VIEWPORT, **context)
        try:
            yield browser
        finally:
            browser.close()


def sh(cwd, *args, timeout=600, env=None):
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def readme_ui() -> tuple[str, str]:
    """The README's ``mlflow ui`` command for the local store and the address it says to open."""
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\s*(mlflow ui --backend-store-uri sqlite:///mlflow\.db)\s+#.*?(http://127\.0\.0\.1:5000\S*)", line)
        if m:
            return m.group(1), m.group(2)
    raise AssertionError("the README has no 'mlflow ui --backend-store-uri sqlite:///mlflow.db  # … http://…' line")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_ui(command: str, cwd: Path):
    """The README's command, on a free port, with one worker (the address changes only its port)."""
    port = free_port()
    log = open(cwd / "mlflow-ui.log", "w")
    proc = subprocess.Popen([*command.split(), "--port", str(port), "--workers", "1"], cwd=cwd, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})

    def up():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return r.status == 200
        except OSError:
            return proc.poll() is not None  # died: stop waiting, the assertion below says so
    try:
        wait_until(up, 240, "mlflow ui to answer")
        assert proc.poll() is None, (cwd / "mlflow-ui.log").read_text()[-2000:]
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# ------------------------------------------------------------------------------------ a local study, as the README


RUN = ["dataset=digits", "train=demo", "train.epochs=1", "tables=[2]"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """In a fresh folder, with the README's local store (./mlflow.db): sweep A (SGD, frSF+BN+BM), sweep B (SGD — A's
    run, shared — and BN), then one run outside any sweep (brSF+BN+BM). Returns the folder and the sweep runs."""
    cwd = tmp_path_factory.mktemp("study")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if k not in ("MLFLOW_TRACKING_URI", "ASYM_SWEEP_RUN_ID")}
    for args in (["-m", "model=SGD,frSF+BN+BM", "lr_mult=100"], ["-m", "model=SGD,BN", "lr_mult=100"],
                 ["model=brSF+BN+BM", "lr_mult=100"]):
        res = sh(cwd, "asym-train", *args, *RUN, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
    uri = f"sqlite:///{cwd}/mlflow.db"  # what the README's default (sqlite:///mlflow.db) means there
    c = tracking.client(uri)
    sweeps = c.search_runs([c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id],
                           "tags.`asym.kind` = 'sweep'", order_by=["attributes.start_time ASC"])  # oldest first
    return cwd, sweeps, env, uri


def artifact_text(uri: str, run_id: str, path: str) -> str:
    import mlflow
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri)).read_text()


def test_a_sweep_is_a_parent_run_holding_its_plan_and_tables(study, monkeypatch):
    """Each sweep has its own run (asym.kind=sweep) with its plan, overrides, tables and report; the runs it first
    trains are its children, a shared run keeps its first sweep, and each sweep lists all its runs. Tables and status
    never count a sweep run; --log-to-mlflow logs regenerated tables into the newest sweep run of the protocol."""
    cwd, sweeps, env, uri = study
    monkeypatch.chdir(cwd)  # MLflow's artifacts of a local store sit under ./mlruns
    assert len(sweeps) == 2 and all(s.data.tags[tracking.KIND_TAG] == "sweep" for s in sweeps)
    a, b = (s.info.run_id for s in sweeps)
    assert [s.info.status for s in sweeps] == ["FINISHED", "FINISHED"]
    table = tracking.runs_table(uri).set_index("model")
    assert sorted(table.index) == ["BN", "SGD", "brSF+BN+BM", "frSF+BN+BM"]  # the sweep runs are not trained runs
    assert table.loc["SGD", "parent_run_id"] == a and table.loc["frSF+BN+BM", "parent_run_id"] == a
    assert table.loc["BN", "parent_run_id"] == b and not isinstance(table.loc["brSF+BN+BM", "parent_run_id"], str)
    for run_id in (a, b):
        files = {f.path for f in tracking.client(uri).list_artifacts(run_id)} | \
            {f.path for f in tracking.client(uri).list_artifacts(run_id, "tables")}
        assert {"runs.json", "overrides.yaml", "multirun.yaml", "report.html", "runs.csv", "tables/tables.html",
                "tables/tables.csv", "tables/tables.md"} <= files, files
        assert "Table 2 — Exp. A: sign-concordant feedback" in artifact_text(uri, run_id, "tables/tables.html")
    listed = {r["name"]: r for r in csv.DictReader(io.StringIO(artifact_text(uri, b, "runs.csv")))}
    assert set(listed) == {"SGD ×100 · Digits", "BN ×100 · Digits"} and listed["SGD ×100 · Digits"]["parent_run_id"] == a
    assert "model=SGD,BN" in artifact_text(uri, b, "overrides.yaml")
    # asym-status reads the sweep's runs, not the sweep runs
    status = sh(cwd, "asym-status", "runs", env=env)
    assert status.returncode == 0 and "2/2 done" in status.stdout, status.stdout + status.stderr
    # the run outside any sweep is not in B's tables yet; --log-to-mlflow puts the regenerated ones there
    assert "brSF+BN+BM" not in {r["model"] for r in csv.DictReader(io.StringIO(artifact_text(uri, b, "tables/tables.csv")))
                                if r["error"]}
    res = sh(cwd, "asym-tables", "--table", "2", "--log-to-mlflow", env=env)
    assert res.returncode == 0 and f"logged to MLflow run {b}" in res.stderr, res.stderr
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(artifact_text(uri, b, "tables/tables.csv")))}
    assert float(rows["brSF+BN+BM"]["error"]) == pytest.approx(table.loc["brSF+BN+BM", "best_val_error"], rel=1e-3)
    res = sh(cwd, "asym-report", "--out", "report.html", "--log-to-mlflow", a, env=env)
    assert res.returncode == 0 and f"logged to MLflow run {a}" in res.stderr, res.stderr
    assert "brSF+BN+BM" in artifact_text(uri, a, "report.html")
    bad = sh(cwd, "asym-tables", "--log-to-mlflow", "0123456789abcdef", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: run 0123456789abcdef is not a sweep run") and \
        len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_the_readme_link_opens_on_the_runs_and_the_sweep_shows_its_tables(study, chromium, test_output):
    """The README's ``mlflow ui`` and link, in a browser that never saw MLflow: the runs table of the study (not the
    GenAI overview's "Traces"), with the experiment's description; a sweep expands to its runs, whose names are
    measured against their cells; the sweep's tables.html renders Table 2 in MLflow's artifact view."""
    cwd, sweeps, _, uri = study
    command, link = readme_ui()
    exp_id = tracking.client(uri).get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id
    with mlflow_ui(command, cwd) as port, fresh_browser(chromium) as browser:
        page = browser.new_page()
        page.goto(link.replace(":5000", f":{port}"))
        page.get_by_role("columnheader", name="Run Name").first.wait_for(timeout=120_000)
        assert f"/#/experiments/{exp_id}/" in page.url  # the README's experiment is the study's in a fresh mlflow.db
        for sweep in sweeps:
            page.get_by_text(sweep.info.run_name, exact=True).first.wait_for(timeout=60_000)
        assert "/overview" not in page.url and "workflowType=genai" not in page.url, page.url
        assert page.get_by_text("How Important Is Weight Symmetry in Backpropagation?").count() >= 1
        page.get_by_text("brSF+BN+BM ×100 · Digits", exact=True).first.wait_for(timeout=60_000)  # the lone run
        page.screenshot(path=str(test_output / "mlflow-ui-local-runs.png"))
        top = {n["text"]: n for n in page.evaluate(MEASURE_NAMES)}
        # expand sweep A (its row's ⊞ button): its runs appear, nested under it
        page.locator(NAME_CELL).filter(has_text=sweeps[0].info.run_name).locator("button").first.click()
        page.get_by_text("frSF+BN+BM ×100 · Digits", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(test_output / "mlflow-ui-local-sweep-expanded.png"))
        nested = {n["text"]: n for n in page.evaluate(MEASURE_NAMES)}
        top_room = top["brSF+BN+BM ×100 · Digits"]["room"]        # a run outside any sweep: a top-level row
        nested_room = nested["frSF+BN+BM ×100 · Digits"]["room"]  # a run under its sweep
        font = nested["frSF+BN+BM ×100 · Digits"]["font"]
        shown = {**top, **nested}
        for text, w in zip(shown, page.evaluate(TEXT_WIDTHS, [font, list(shown)])):  # the canvas measures as laid out
            assert abs(w - shown[text]["width"]) < 1, (text, w, shown[text]["width"])

        def widths(texts):
            return dict(zip(texts, page.evaluate(TEXT_WIDTHS, [font, list(texts)])))
        labels = widths(paper_models())
        demo_leads = widths([lead(m, k) for m in DEMO["models"] for k in DEMO["mults"]])
        nested_leads = [t for t, w in demo_leads.items() if w <= nested_room]
        print(f"\nRun Name room: {top_room:.0f} px in a top-level row, {nested_room:.0f} px under a sweep; widest paper "
              f"label {max(labels.values()):.0f} px, widest demo lead {max(demo_leads.values()):.0f} px; under a sweep "
              f"{len(nested_leads)} of {len(demo_leads)} demo leads (model ×multiplier) show whole")
        assert not [m for m, w in labels.items() if w > top_room], "a paper model's label is cut in a top-level row"
        assert not [t for t, w in demo_leads.items() if w > top_room], "a demo model ×multiplier is cut at top level"
        assert not [m for m in DEMO["models"] if labels[m] > nested_room], "a demo model's label is cut under its sweep"
        for text, n in shown.items():  # each name starts with what differs: its model and multiplier
            if " ×" in text:
                assert text.split(" · ")[0] == lead(*parse_lead(text)), text

        # the sweep's tables, rendered by MLflow's artifact view
        a = sweeps[0].info.run_id
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs/{a}/artifacts/tables/tables.html"
                  "?workflowType=machine_learning")
        frame = page.frame_locator("iframe").first
        frame.get_by_text("Table 2 — Exp. A: sign-concordant feedback", exact=False).first.wait_for(timeout=120_000)
        frame.get_by_text("MNIST (stands in for Digits)").first.wait_for(timeout=30_000)
        page.screenshot(path=str(test_output / "mlflow-ui-sweep-tables.png"))
    for shot in ("mlflow-ui-local-runs.png", "mlflow-ui-local-sweep-expanded.png", "mlflow-ui-sweep-tables.png"):
        assert (test_output / shot).stat().st_size > 10_000


def test_the_report_in_a_browser(study, chromium, test_output):
    """asym-report's page as a reader sees it (a screenshot for CI's artifacts): each table under its title once,
    the paper's stand-in row named, every figure with a sentence for its caption (Exp. B, the learning curves, the
    heat maps of the four tables with a cell to compare)."""
    cwd, _, env, _ = study
    res = sh(cwd, "asym-report", "--out", "report.html", env=env)
    assert res.returncode == 0, res.stderr
    with fresh_browser(chromium) as browser:
        page = browser.new_page()
        page.goto((cwd / "report.html").as_uri())
        headings = page.locator("h2").all_inner_texts()
        assert sum(h.startswith("Table 2 — Exp. A") for h in headings) == 1 and len(headings) == len(set(headings))
        assert page.locator("caption").filter(has_text="Table 2").count() == 0  # the title once, as the heading
        assert page.get_by_text("MNIST (stands in for Digits)").count() >= 1
        captions = page.locator("figcaption").all_inner_texts()
        assert len(captions) == 6 and all(c.startswith("Figure ") and c.endswith(".") for c in captions)
        assert all(page.locator("img").evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"))
        page.screenshot(path=str(test_output / "report.png"), full_page=True)
    assert (test_output / "report.png").stat().st_size > 50_000


def lead(model: str, mult: float) -> str:
    """The start of a run's name: its model and its multiplier."""
    run = {"model": model, "dataset": "digits", "lr_mult": mult, "freeze": "none", "procedure": "standard", "seed": 0}
    return tracking.run_name(run).split(" · ")[0]


def parse_lead(name: str) -> tuple[str, float]:
    model, _, mult = name.split(" · ")[0].rpartition(" ×")
    return model, float(mult)


def paper_models() -> list[str]:
    return list(dict.fromkeys(column_run(c)[0] for spec in TABLES.values() for c in spec.columns))


# --------------------------------------------------------------------------------------- a real server, basic-auth


NAMES = ["SGD ×10 · Digits", "SGD ×1 · Digits", "BN ×10 · Digits", "BN ×1 · Digits"]


def test_ui_lists_runs_by_name_and_plots_val_error(mlflow_server, mlflow_users, chromium, tmp_path, test_output):
    from playwright.sync_api import sync_playwright
    exp = f"ui-{uuid.uuid4().hex[:8]}"
    res = subprocess.run(["asym-train", "-m", "model=SGD,BN", "lr_mult=10,1", "dataset=digits", "train=demo",
                          "train.epochs=3", f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}",
                          f"output_root={tmp_path}/runs"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    c = tracking.client(mlflow_server)
    exp_id = c.get_experiment_by_name(exp).experiment_id
    assert tracking.experiment_url(mlflow_server, exp_id) in res.stdout + res.stderr  # the sweep logs its link
    run_ = next(r for r in c.search_runs([exp_id]) if r.info.run_name == NAMES[0])
    sweep = next(r for r in c.search_runs([exp_id]) if tracking.is_sweep(r))
    dataset = run_.inputs.dataset_inputs[0].dataset
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        anonymous = browser.new_context()
        assert anonymous.request.get(mlflow_server).status == 401, "the UI must not open without credentials"
        anonymous.close()
        page = browser.new_context(viewport={"width": 1400, "height": 1000}, http_credentials={
            "username": os.environ["MLFLOW_TRACKING_USERNAME"], "password": os.environ["MLFLOW_TRACKING_PASSWORD"]}
        ).new_page()
        page.goto(tracking.experiment_url(mlflow_server, exp_id))
        page.locator(NAME_CELL).filter(has_text=sweep.info.run_name).locator("button").first.click(timeout=120_000)
        for name in NAMES:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.get_by_role("columnheader", name="Dataset").first.wait_for(timeout=60_000)
        cells = page.get_by_text(f"{dataset.name} ({dataset.digest})", exact=True)
        cells.first.wait_for(timeout=60_000)
        assert cells.count() == len(NAMES), "every run shows its dataset in the Dataset column"
        page.screenshot(path=str(test_output / "mlflow-ui-runs.png"))
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs/{run_.info.run_id}")
        page.get_by_text(tracking.describe_model("SGD"), exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("Description", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(test_output / "mlflow-ui-run-description.png"))
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs/{run_.info.run_id}/model-metrics")
        chart = page.locator("div").filter(has_text="val_error").locator("svg.main-svg").first
        chart.wait_for(timeout=60_000)
        page.get_by_text(NAMES[0]).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # let the lines draw before the picture
        page.screenshot(path=str(test_output / "mlflow-ui-val-error.png"))
        browser.close()
    for shot in ("mlflow-ui-runs.png", "mlflow-ui-run-description.png", "mlflow-ui-val-error.png"):
        assert (test_output / shot).stat().st_size > 10_000


def test_the_ui_names_we_rely_on_are_mlflows():
    """The experiment kind, the URL parameter of the model-training view and the parent tag are MLflow UI names, not
    public Python API: pinned on the installed UI bundle (and on mlflow_tags for the parent)."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
    assert tracking.PARENT_TAG == MLFLOW_PARENT_RUN_ID
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(p.read_text(errors="ignore") for p in bundle.glob("*.js"))
    for name in (tracking.EXPERIMENT_KIND_TAG, f'"{tracking.EXPERIMENT_KIND}"', "workflowType", '"machine_learning"'):
        assert name in text, name
