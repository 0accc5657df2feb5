"""`dvc plots show` renders with no network: vega is inlined through the template in `.dvc/config`.

The HTML comes from a real `dvc plots show` over the committed plots/*.csv in the repo root. The browser check opens it
in headless Debian chromium (the shared ``browser`` fixture of conftest) with every non-file:// request aborted; it
is skipped when playwright or /usr/bin/chromium is missing, unless DEEPNOTES_REQUIRE_BROWSER=1 (then it fails).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines import offline_plots
from pipelines.io import atomic_write_text
from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent
SCREENSHOT = REPO_ROOT / "test-artifacts" / "plots" / "dvc-plots-offline.png"


def _n_vega_plots() -> int:
    """One vega plot per data file under the paths of dvc.yaml's top-level `plots:` definitions, and one per named
    definition (an id whose `y` maps files to columns, e.g. a forecast's test series)."""
    definitions = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]
    paths = [REPO_ROOT / (next(iter(d)) if isinstance(d, dict) else d) for d in definitions]
    files = [f for p in paths for f in (p.rglob("*") if p.is_dir() else [p])]
    named = [d for d in definitions if isinstance(d, dict) and isinstance(next(iter(d.values())).get("y"), dict)]
    return sum(f.is_file() and f.suffix in (".csv", ".tsv", ".json", ".yaml", ".yml") for f in files) + len(named)


N_PLOTS = _n_vega_plots()
#: Image plots (each task's evaluation figures: prediction grids, confusion matrices, ...) embedded as <img>.
N_IMAGES = len(list((REPO_ROOT / "plots" / "evaluate").rglob("*.png")))


def _empty_plot_ids() -> set[str]:
    """DVC's div ids of data files with a header and no rows: vega would draw nothing for them."""
    definitions = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["plots"]
    paths = [REPO_ROOT / (next(iter(d)) if isinstance(d, dict) else d) for d in definitions]
    files = [f for p in paths for f in (p.rglob("*.csv") if p.is_dir() else [p]) if f.suffix == ".csv"]
    return {
        re.sub(r"[/.]", "_", str(f.relative_to(REPO_ROOT)))
        for f in files
        if f.is_file() and len(f.read_text().strip().splitlines()) <= 1
    }


def _dvc(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [str(BIN / "dvc"), *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A freshly generated template; the configured one is written too when missing (as `make install` does)."""
    path = offline_plots.write_template(tmp_path_factory.mktemp("template") / "plots-offline.html")
    if not offline_plots.TEMPLATE_PATH.is_file():
        atomic_write_text(offline_plots.TEMPLATE_PATH, path.read_text(encoding="utf-8"))
    return path


@pytest.fixture(scope="module")
def plots_html(template, tmp_path_factory) -> Path:
    """`dvc plots show` as users type it (no --html-template), written to a temporary folder."""
    out = tmp_path_factory.mktemp("dvc-plots") / "out"
    start = time.perf_counter()
    result = _dvc("plots", "show", "-o", str(out))
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, f"dvc plots show exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    html = out / "index.html"
    assert html.as_uri() in result.stdout, result.stdout
    print(f"dvc plots show: {elapsed:.2f} s, {html.stat().st_size / 1e6:.1f} MB")
    return html


def test_template_inlines_vega_and_keeps_dvc_placeholders(template):
    text = template.read_text(encoding="utf-8")
    assert text.count("{plot_divs}") == 1 and text.count("{refresh_tag}") == 1
    assert "{scripts}" not in text  # DVC puts its CDN <script src> tags there
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.IGNORECASE)
    assert "window.vegaEmbed=" in text and "window.vega=" in text and "window.vegaLite=" in text
    assert len(text) > 500_000  # the libraries themselves, not a loader
    assert not list(template.parent.glob(".*.tmp")), "the atomic write left its temporary file behind"


def test_dvc_config_points_at_the_generated_template():
    result = _dvc("config", "plots.html_template")
    assert result.returncode == 0, result.stderr
    # DVC resolves a relative plots.html_template against the .dvc directory (dvc/commands/plots.py).
    assert (REPO_ROOT / ".dvc" / result.stdout.strip()).resolve() == offline_plots.TEMPLATE_PATH.resolve()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(offline_plots.TEMPLATE_PATH)], cwd=REPO_ROOT)
    assert ignored.returncode == 0, "the generated template must stay out of git"


def test_dvc_does_not_fall_back_when_the_template_is_missing(tmp_path):
    """Why `make install` writes the template: without it DVC stops (it does not use its CDN page instead)."""
    result = _dvc("plots", "show", "-o", str(tmp_path / "out"), "--html-template", str(tmp_path / "missing.html"))
    assert result.returncode != 0
    assert "{plot_divs}" in result.stdout + result.stderr


def test_dvc_plots_show_html_needs_no_network(plots_html):
    text = plots_html.read_text(encoding="utf-8")
    sources = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", text, re.IGNORECASE)
    assert not [s for s in sources if s.lower().startswith(("http://", "https://", "//"))], sources
    assert "cdn.jsdelivr.net" not in text
    assert "window.vegaEmbed=" in text  # the inlined bundle
    assert text.count("vegaEmbed('#") == N_PLOTS > 0


def test_dvc_plots_render_in_chromium_with_network_blocked(browser, plots_html):
    errors: list[str] = []
    blocked: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.route("**/*", only_files)
        page.goto(plots_html.as_uri(), wait_until="load")
        page.wait_for_function(f"document.querySelectorAll('div[id] .marks').length >= {N_PLOTS}", timeout=60_000)
        images = page.evaluate("""() => [...document.querySelectorAll('body > div[id] img')].map(
            img => ({src: img.getAttribute('src'), width: img.naturalWidth}))""")
        charts = page.evaluate("""() => [...document.querySelectorAll('body > div[id]')]
                                       .filter(div => !div.querySelector('img')).map(div => {
            const marks = div.querySelector('.marks');
            const box = marks ? marks.getBoundingClientRect() : {width: 0, height: 0};
            return {id: div.id, kind: marks ? marks.tagName.toLowerCase() : null,
                    width: box.width, height: box.height,
                    shapes: div.querySelectorAll('.marks g[class*="mark-"] path, .marks g[class*="mark-"] rect')
                               .length};
        })""")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    finally:
        context.close()

    assert errors == [], errors
    assert blocked == [], f"the page tried to reach the network: {blocked}"
    assert len(charts) == N_PLOTS, charts
    assert len(images) == N_IMAGES > 0 and all(i["width"] > 0 for i in images), images  # the tasks' figures
    empty = _empty_plot_ids()
    assert not empty, f"data files without rows draw empty charts: {sorted(empty)}"
    for chart in charts:
        assert chart["kind"] in ("svg", "canvas"), chart
        if chart["id"] not in empty:
            assert chart["width"] > 50 and chart["height"] > 50, chart
            assert chart["kind"] == "canvas" or chart["shapes"] > 0, f"nothing drawn in {chart['id']}"
