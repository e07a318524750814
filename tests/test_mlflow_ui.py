"""The MLflow UI of a real server (basic-auth), in a real headless Chromium: runs listed by readable name with their
dataset, a run's description, a val_error curve. Screenshots go to test-output/ ($ASYM_TEST_OUTPUT; .ci/run keeps
them as CI artifacts)."""
import os
import shutil
import subprocess
import uuid

import pytest

from asym import tracking
from conftest import missing_service

pytestmark = pytest.mark.slow
NAMES = ["Digits · SGD · lr×10", "Digits · SGD · lr×1", "Digits · BN · lr×10", "Digits · BN · lr×1"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        missing_service("no Chromium installed (apt-get install chromium)")
    return path


def test_ui_lists_runs_by_name_and_plots_val_error(mlflow_server, mlflow_users, chromium, tmp_path, test_output):
    from playwright.sync_api import sync_playwright
    exp = f"ui-{uuid.uuid4().hex[:8]}"
    res = subprocess.run(["asym-train", "-m", "model=SGD,BN", "lr_mult=10,1", "dataset=digits", "train=demo",
                          "train.epochs=3", f"tracking.uri={mlflow_server}", f"tracking.experiment={exp}",
                          f"output_root={tmp_path}/runs"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    c = tracking.client(mlflow_server)
    exp_id = c.get_experiment_by_name(exp).experiment_id
    run = next(r for r in c.search_runs([exp_id]) if r.info.run_name == NAMES[0])
    dataset = run.inputs.dataset_inputs[0].dataset
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        anonymous = browser.new_context()
        assert anonymous.request.get(mlflow_server).status == 401, "the UI must not open without credentials"
        anonymous.close()
        page = browser.new_context(viewport={"width": 1400, "height": 1000}, http_credentials={
            "username": os.environ["MLFLOW_TRACKING_USERNAME"], "password": os.environ["MLFLOW_TRACKING_PASSWORD"]}
        ).new_page()
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs")
        for name in NAMES:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        page.get_by_role("columnheader", name="Dataset").first.wait_for(timeout=60_000)
        cells = page.get_by_text(f"{dataset.name} ({dataset.digest})", exact=True)
        cells.first.wait_for(timeout=60_000)
        assert cells.count() == len(NAMES), "every run shows its dataset in the Dataset column"
        page.screenshot(path=str(test_output / "mlflow-ui-runs.png"))
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs/{run.info.run_id}")
        page.get_by_text(tracking.describe_model("SGD"), exact=True).first.wait_for(timeout=60_000)
        page.get_by_text("Description", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(test_output / "mlflow-ui-run-description.png"))
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs/{run.info.run_id}/model-metrics")
        chart = page.locator("div").filter(has_text="val_error").locator("svg.main-svg").first
        chart.wait_for(timeout=60_000)
        page.get_by_text(NAMES[0]).first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # let the lines draw before the picture
        page.screenshot(path=str(test_output / "mlflow-ui-val-error.png"))
        browser.close()
    for shot in ("mlflow-ui-runs.png", "mlflow-ui-run-description.png", "mlflow-ui-val-error.png"):
        assert (test_output / shot).stat().st_size > 10_000
