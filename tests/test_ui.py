"""The MLflow UI in a real browser: Playwright drives headless Debian chromium over an ``mlflow server`` on the tiny
repro's store, as a user clicks through it, from MLflow's home page, with no deep links.

The walk: the home page, the sidebar's workflow switch set to "Model training", the experiments list, the
``deepnotes`` experiment, which opens on its runs table (one run per experiment of params.yaml), a run's overview
(status, duration, source, datasets), its metric charts, its system metrics and its plot artifacts. Full-page
screenshots land in ``test-artifacts/ui/`` (01-runs.png, 02-run-overview.png, 03-metrics.png,
04-system-metrics.png, 05-artifacts.png, 06-datasets.png). Skipped without playwright or /usr/bin/chromium, unless
``DEEPNOTES_REQUIRE_BROWSER=1`` (then it fails).

Why the switch: MLflow 3.17's UI takes an experiment's kind from that switch (the URL parameter ``workflowType``,
else the browser's ``localStorage``, default GenAI), not from the ``mlflow.experimentKind`` tag the pipeline sets
(:data:`pipelines.tracking.KIND`), so a fresh browser opens every experiment on its GenAI overview
(:func:`test_fresh_browser_opens_the_experiment_on_its_runs`, a strict xfail that passes once MLflow reads the tag).
A user picks "Model training" once; the browser remembers it.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.tracking import KIND, KIND_TAG, runs_table_url
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("browser")]  # browser first: a skip costs nothing

SHOTS = REPO_ROOT / "test-artifacts" / "ui"
VIEWPORT = {"width": 1600, "height": 1000}
EXPERIMENT = "deepnotes"  # tracking.experiment_name of params.yaml
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
#: The sidebar switch's choice that shows experiments as training workloads (runs, models) instead of GenAI.
TRAINING = "Model training"
#: The page the UI shows once it opened an experiment: its runs table (``#/experiments/<id>/runs?...``).
RUNS_TABLE = re.compile(r"#/experiments/(\d+)/runs(\?|$)")
#: Where the UI opens an experiment: its runs table, or (as GenAI) its overview or traces.
LANDING = re.compile(r"#/experiments/\d+/(runs|overview|traces)(/|\?|$)")
#: MLflow's ``mlflow.data.context`` of a run's train, val and test inputs (``mlflow.log_input``).
CONTEXTS = {"training", "validation", "testing"}
#: The units of the UI's durations ("850ms", "52.2s", "14.4min", "1.2h", "2.0d"; one decimal), in seconds.
UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


@pytest.fixture
def page(browser):
    """A fresh page on the UI (its own context: an empty ``localStorage``, as in a new browser; desktop viewport;
    60 s timeouts); fails on uncaught page errors."""
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


def _api(base: str, endpoint: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
    """One call of MLflow's REST API (``/api/2.0/mlflow/<endpoint>``): a GET with ``query``, or a POST of ``body``."""
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _experiment(base: str) -> dict[str, Any]:
    return _api(base, "experiments/get-by-name", experiment_name=EXPERIMENT)["experiment"]


def _run(base: str) -> dict[str, Any]:
    """The stored run named :data:`RUN` (info, data, inputs), as the REST API returns it."""
    found = _api(
        base,
        "runs/search",
        {"experiment_ids": [_experiment(base)["experiment_id"]], "filter": f"tags.`mlflow.runName` = '{RUN}'"},
    )
    runs = found.get("runs", [])
    assert len(runs) == 1, f"expected one run named {RUN!r} in experiment {EXPERIMENT!r}, found {len(runs)}"
    return runs[0]


def _open_experiments_list(page, base: str, training: bool = True) -> None:
    """From MLflow's home page (``base``, what ``make ui`` serves), close the MLflow Assistant side panel, set the
    sidebar's workflow switch to :data:`TRAINING` (unless not ``training``) and open the experiments list."""
    from playwright.sync_api import expect

    page.goto(f"{base}/", wait_until="load")  # the UI polls: "networkidle" never comes
    expect(page.get_by_role("heading", name="Welcome to MLflow")).to_be_visible()
    page.get_by_role("button", name="Close", exact=True).click()  # the assistant opens itself on a first visit
    if training:
        page.get_by_role("button", name=TRAINING, exact=True).click()
    page.get_by_role("link", name="Experiments", exact=True).click()
    expect(page.get_by_role("heading", name="Experiments", exact=True)).to_be_visible()


def _open_runs_table(page, base: str) -> None:
    """Walk to the ``deepnotes`` experiment as a user does; it must open on its runs table."""
    from playwright.sync_api import expect

    _open_experiments_list(page, base)
    page.get_by_role("link", name=EXPERIMENT, exact=True).click()
    expect(page).to_have_url(RUNS_TABLE)
    expect(page.get_by_role("link", name=RUN, exact=True)).to_be_visible()


def _open_run(page, base: str) -> None:
    """Walk on from the runs table to the overview of run :data:`RUN`."""
    from playwright.sync_api import expect

    _open_runs_table(page, base)
    page.get_by_role("link", name=RUN, exact=True).click()
    expect(page.get_by_role("heading", name=RUN, exact=True)).to_be_visible()


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


def _shown_seconds(text: str) -> tuple[float, float]:
    """``(seconds, resolution in seconds)`` of a duration as the UI writes it (``14.4min``: 864 s, to 6 s).

    Raises:
        AssertionError: ``text`` is not one of the UI's duration formats (:data:`UNITS`).
    """
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|min|h|d)", text.strip())
    assert found, f"the run page's Duration reads {text!r}, not a duration such as 52.2s or 14.4min"
    value, unit = found.groups()
    decimals = len(value.partition(".")[2])
    return float(value) * UNITS[unit], 10.0**-decimals * UNITS[unit]


def test_runs_table_lists_every_experiment(page, mlflow_server, tiny_repo, record_property):
    from playwright.sync_api import expect

    experiment = _experiment(mlflow_server)
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags.get(KIND_TAG) == KIND, f"experiment {EXPERIMENT!r} has {KIND_TAG}={tags.get(KIND_TAG)!r}, not {KIND!r}"
    params = yaml.safe_load((tiny_repo[0] / "params.yaml").read_text())
    expected = sorted(params["experiments"] | params["transfer"])  # the fine-tuned ones are runs too

    _open_runs_table(page, mlflow_server)
    db = tiny_repo[0] / "mlflow" / "mlflow.db"  # what `make ui` prints: the same page
    assert page.url.startswith(runs_table_url(mlflow_server, db, EXPERIMENT).partition("?")[0] + "?")
    assert RUNS_TABLE.search(page.url)[1] == experiment["experiment_id"]
    for name in expected:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(expected)} matching runs", exact=True)).to_be_visible()
    _shot(page, "01-runs.png", record_property)


def test_run_page_shows_metric_charts_and_plots(page, mlflow_server, record_property):
    from playwright.sync_api import expect

    stored = _run(mlflow_server)["info"]
    _open_run(page, mlflow_server)
    expect(page.get_by_text("Finished", exact=True)).to_be_visible()
    duration = page.get_by_test_id("key-value-Duration")  # "Duration" and its value
    expect(duration).to_contain_text(re.compile(r"\d(ms|s|min|h|d)$"))
    shown, resolution = _shown_seconds(duration.inner_text().removeprefix("Duration"))
    recorded = (int(stored["end_time"]) - int(stored["start_time"])) / 1000
    assert abs(shown - recorded) <= resolution / 2 + 1e-3, f"Duration shows {shown} s, the run records {recorded} s"
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


def test_run_page_shows_datasets_and_source(page, mlflow_server, record_property):
    """The run's ``mlflow.log_input`` datasets (train, val and test, with their contexts, digests, source and
    schema) and its source tags, as the UI shows them: the runs table's Dataset column, the run overview's Source
    (the entry point's file name and the commit) and Datasets, and the data details drawer with every input."""
    from playwright.sync_api import expect

    run = _run(mlflow_server)
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    inputs = run.get("inputs", {}).get("dataset_inputs", [])
    contexts = {t["value"] for i in inputs for t in i.get("tags", []) if t["key"] == "mlflow.data.context"}
    assert contexts == CONTEXTS, f"run {RUN} logs inputs with contexts {sorted(contexts)}, not {sorted(CONTEXTS)}"
    for key in ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit", "dvc.stage"):
        assert tags.get(key), f"run {RUN} has no {key} tag"
    labels = [f"{i['dataset']['name']} ({i['dataset']['digest']})" for i in inputs]  # the UI's "name (digest)"

    def any_dataset(scope):
        """The run's datasets shown in ``scope``: the UI lists the first and folds the others into "+2"."""
        shown = scope.get_by_text(labels[0], exact=True)
        for label in labels[1:]:
            shown = shown.or_(scope.get_by_text(label, exact=True))
        return shown.filter(visible=True).first

    _open_runs_table(page, mlflow_server)
    expect(any_dataset(page)).to_be_visible()  # the Dataset column of the run's row

    page.get_by_role("link", name=RUN, exact=True).click()
    expect(page.get_by_role("heading", name=RUN, exact=True)).to_be_visible()
    source = page.get_by_test_id("key-value-Source")
    expect(source).to_contain_text(tags["mlflow.source.name"].rsplit("/", 1)[-1])  # train.py
    expect(source).to_contain_text(tags["mlflow.source.git.commit"][:7])
    expect(page.get_by_text(tags["dvc.stage"], exact=False).first).to_be_visible()  # the Tags box: dvc.stage

    listed = any_dataset(page)  # the overview's Datasets box: a click opens the data details
    clicked = labels.index(listed.inner_text().strip())
    listed.click()
    drawer = page.get_by_role("dialog")
    expect(drawer).to_contain_text(f"{len(inputs)} datasets used")
    for label, dataset_input in zip(labels, inputs, strict=True):
        expect(drawer.get_by_text(label, exact=True)).to_be_visible()
        context = next(t["value"] for t in dataset_input["tags"] if t["key"] == "mlflow.data.context")
        expect(drawer.get_by_text(re.compile(f"^{context}$", re.IGNORECASE)).first).to_be_visible()
    first = inputs[clicked]["dataset"]  # the details of the one clicked: digest, source, schema
    expect(drawer).to_contain_text(first["digest"])
    expect(drawer).to_contain_text(re.compile(rf"Source type:\s*{re.escape(first['source_type'])}", re.IGNORECASE))
    schema = json.loads(first.get("schema") or "{}")
    fields = [f["name"] for spec in schema.values() if isinstance(spec, list) for f in spec if f.get("name")]
    assert fields, f"dataset {first['name']} of run {RUN} has no named schema fields: {first.get('schema')!r}"
    expect(drawer.get_by_text(fields[0], exact=True).first).to_be_visible()
    _shot(page, "06-datasets.png", record_property)


def test_make_ui_url_opens_the_runs_table(page, mlflow_server, tiny_repo):
    """The URL ``make ui`` prints opens the runs table in a fresh browser (it carries ``workflowType``)."""
    from playwright.sync_api import expect

    url = runs_table_url(mlflow_server, tiny_repo[0] / "mlflow" / "mlflow.db", EXPERIMENT)
    page.goto(url, wait_until="load")
    expect(page).to_have_url(RUNS_TABLE)
    expect(page.get_by_role("link", name=RUN, exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^\d+ matching runs$"))).to_be_visible()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="MLflow 3.17 takes the experiment kind from the sidebar switch (default GenAI), not from the "
    "mlflow.experimentKind tag (mlflow/mlflow#24498): a fresh browser opens the GenAI overview. When this passes, "
    "MLflow reads the tag: drop the switch from the walk and this mark.",
)
def test_fresh_browser_opens_the_experiment_on_its_runs(page, mlflow_server):
    try:
        _open_experiments_list(page, mlflow_server, training=False)
        page.get_by_role("link", name=EXPERIMENT, exact=True).click()
        page.wait_for_url(LANDING)
    except AssertionError as exc:  # the walk itself broke: not the known behaviour this xfail stands for
        raise RuntimeError(f"the walk to experiment {EXPERIMENT!r} failed: {exc}") from exc
    assert RUNS_TABLE.search(page.url), f"a fresh browser opened {EXPERIMENT!r} on {page.url}, not its runs table"
