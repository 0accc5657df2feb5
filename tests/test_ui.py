"""The MLflow UI in a real browser: Playwright drives headless Debian chromium over an ``mlflow server`` on the tiny
repro's store.

Checks that the experiment's runs table lists one run per experiment of params.yaml, and that a run's pages show its
metric charts, its system metrics and its plot artifacts. Full-page screenshots land in ``test-artifacts/ui/``
(01-runs.png, 02-run-overview.png, 03-metrics.png, 04-system-metrics.png, 05-artifacts.png). Skipped without
playwright or /usr/bin/chromium, unless ``DEEPNOTES_REQUIRE_BROWSER=1`` (then it fails).
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("browser")]  # browser first: a skip costs nothing

SHOTS = REPO_ROOT / "test-artifacts" / "ui"
VIEWPORT = {"width": 1600, "height": 1000}
RUN = "mlp_churn"
#: What the run's pages must show: add a name to a list to check one more chart or plot.
METRIC_CHARTS = ["train_loss", "val_loss", "grad_norm_total", "grad_ratio_first_last", "dead_relu_fraction"]
PLOTS = [
    "history.png",
    "confusion_matrix.png",
    "roc.png",
    "pr.png",
    "grad_flow.png",
    "bias_variance.png",
    "predictions.png",
    "learning_curve.png",
    "seeds.png",
]
#: The plot shown in the artifacts screenshot.
PREVIEW = "grad_flow.png"
#: Without it MLflow 3 opens an experiment on its GenAI overview (no ``mlflow.experimentKind`` tag is set).
TRAINING = "workflowType=machine_learning"


@pytest.fixture
def page(browser):
    """A fresh page on the UI (its own context, desktop viewport, 60 s timeouts); fails on uncaught page errors."""
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the MLflow UI: {errors}"


def _experiment_id(base: str, name: str = "deepnotes") -> str:
    query = urllib.parse.urlencode({"experiment_name": name})
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as response:
        return json.load(response)["experiment"]["experiment_id"]


def _open_runs_table(page, base: str) -> None:
    """Open the ``deepnotes`` experiment's runs table and close the MLflow Assistant side panel."""
    page.goto(f"{base}/#/experiments/{_experiment_id(base)}/runs?{TRAINING}", wait_until="load")  # the UI polls
    page.get_by_role("link", name=RUN, exact=True).wait_for()
    close = page.get_by_role("button", name="Close", exact=True)
    if close.is_visible():
        close.click()


def _shot(page, name: str, record_property) -> Path:
    """Screenshot the whole content. The UI scrolls inside panes, not the document, so the viewport first grows until
    no pane (a scroll box at least 0.6 of the window high; small fixed-height tables keep scrolling) has more to show.
    Lazily drawn parts, like the metric charts, render as they come into view. The path is attached to the test as a
    property (junit XML) and printed."""
    for _ in range(6):
        page.wait_for_timeout(1000)
        needed = page.evaluate("""() => innerHeight + Math.max(0, ...[...document.querySelectorAll('*')]
            .filter(e => /auto|scroll/.test(getComputedStyle(e).overflowY) && e.clientHeight > 0.6 * innerHeight)
            .map(e => e.scrollHeight - e.clientHeight))""")
        if needed <= page.viewport_size["height"]:
            break
        page.set_viewport_size({"width": VIEWPORT["width"], "height": min(needed, 12000)})
    path = SHOTS / name
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(VIEWPORT)
    record_property(f"screenshot {name}", str(path))
    print(f"screenshot: {path}")
    return path


def test_runs_table_lists_every_experiment(page, mlflow_server, tiny_repo, record_property):
    from playwright.sync_api import expect

    params = yaml.safe_load((tiny_repo[0] / "params.yaml").read_text())
    expected = sorted(params["experiments"] | params["transfer"])  # the fine-tuned ones are runs too
    _open_runs_table(page, mlflow_server)
    for name in expected:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(expected)} matching runs", exact=True)).to_be_visible()
    _shot(page, "01-runs.png", record_property)


def test_run_page_shows_metric_charts_and_plots(page, mlflow_server, record_property):
    from playwright.sync_api import expect

    _open_runs_table(page, mlflow_server)
    href = page.get_by_role("link", name=RUN, exact=True).get_attribute("href")  # "#/experiments/<id>/runs/<run id>"
    page.goto(f"{mlflow_server}/{href}?{TRAINING}", wait_until="load")
    expect(page.get_by_role("heading", name=RUN, exact=True)).to_be_visible()
    expect(page.get_by_text("Finished", exact=True)).to_be_visible()
    _shot(page, "02-run-overview.png", record_property)

    page.get_by_role("tab", name="Model metrics").click()
    search = page.get_by_placeholder("Search metric charts")
    for metric in METRIC_CHARTS:  # charts are drawn lazily: filter so the chart is on screen
        search.fill(metric)
        expect(page.get_by_role("heading", name=metric, exact=True)).to_be_visible()
    search.fill("")
    _shot(page, "03-metrics.png", record_property)

    page.get_by_role("tab", name="System metrics").click()  # MLflow's CPU, memory, disk and network samples
    expect(page.get_by_text("cpu_utilization_percentage").first).to_be_visible()
    _shot(page, "04-system-metrics.png", record_property)

    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("plots", exact=True).click()
    for plot in PLOTS:
        expect(page.get_by_text(plot, exact=True)).to_be_visible()
    page.get_by_text(PREVIEW, exact=True).click()
    preview = page.locator("img[src^='blob:']").first  # the PNG, fetched from the artifact store
    expect(preview).to_be_visible()
    assert preview.evaluate("img => img.complete && img.naturalWidth > 0"), "the plot preview did not decode"
    _shot(page, "05-artifacts.png", record_property)
