"""``report`` stage: ``python -m pipelines.stages.report`` writes ``reports/summary.md``, one leaderboard of every experiment,
and the DVC plots of the diagnostic studies that ran (``plots/diagnostics/<study>/<experiment>.csv``).

Read from the stage outputs (no MLflow query, so the report is a pure function of the DVC metrics files):
``metrics/evaluate/<experiment>.json`` (evaluate), ``metrics/train/<experiment>.json`` (train: parameter count, fit time,
gradient flags) and ``metrics/diagnose/<experiment>.json`` (the opt-in studies). Experiments are ranked within
their task by the primary test metric (accuracy; RMSE for regression, lower first; tied values share a rank, in
params order). An experiment whose files are missing is listed as not run rather than failing the report.

The notes' claims (``claims:`` of params.yaml, :mod:`pipelines.config.claims`) get their own table: each compares two
experiments over the seeds of the ``diagnose`` stage's seeds study, never over one run, and
:func:`claim_verdict` calls a claim ``holds`` only when the two seed ranges do not overlap, so that one seed's noise
(or another CPU's rounding, ``benchmarks/REPRODUCIBILITY.md``) cannot flip it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

from pipelines import REPO_ROOT
from pipelines.config import ConfigError, Params, load_params
from pipelines.io import atomic_write_text
from pipelines.paths import METRICS_ROOT, PLOTS_ROOT
from pipelines.stages.diagnose import COLUMNS, DIAGNOSTICS_ROOT
from pipelines.tasks import get_task

log = logging.getLogger("deepnotes.report")

REPORT_PATH = REPO_ROOT / "reports" / "summary.md"
DIAGNOSTICS_PLOTS_ROOT = PLOTS_ROOT / "diagnostics"


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); rerun the stage that writes it") from None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def collect(params: Params, metrics_root: Path = METRICS_ROOT) -> list[dict[str, Any]]:
    """One row per experiment of ``params`` with the leaderboard's fields (missing ones are ``None``)."""
    rows = []
    for name, exp in params.all_experiments.items():
        evaluation = _read(metrics_root / "evaluate" / f"{name}.json")
        train = _read(metrics_root / "train" / f"{name}.json")
        studies = _read(metrics_root / "diagnose" / f"{name}.json")
        task = get_task(evaluation.get("task") or exp.task)
        metric, higher = task.primary, task.higher_is_better
        bv = evaluation.get("bias_variance", {})
        registry = evaluation.get("registry") or {}
        rows.append(
            {
                "experiment": name,
                "architecture": exp.architecture,
                "dataset": exp.dataset,
                "notes": exp.notes,
                "task": task.name,
                "metric": f"test_{metric}",
                "error_unit": task.error_unit,
                "higher_is_better": higher,
                "value": evaluation.get("test", {}).get(metric),
                "train_error": bv.get("train_error"),
                "val_error": bv.get("val_error"),
                "test_error": bv.get("test_error"),
                "verdict": bv.get("verdict"),
                "gradient_flags": (train.get("gradients") or {}).get("flags"),
                "num_params": train.get("num_params"),
                "fit_seconds": train.get("fit_seconds"),
                "epoch_seconds": train.get("epoch_seconds"),
                "run_id": evaluation.get("run_id") or train.get("run_id"),
                "model": f"{registry['name']} v{registry['version']} ({registry['alias']})"
                if registry.get("name")
                else None,
                "learning_curve": (studies.get("learning_curve") or {}).get("note"),
                "seeds": studies.get("seeds"),
                "bootstrap": studies.get("bootstrap"),
                "pretrained": exp.pretrained.model_dump() if exp.pretrained else None,
                "section": task.report_section(name, evaluation),
            }
        )
    return rows


def _transfer_section(rows: list[dict[str, Any]]) -> list[str]:
    """Transfer learning against training from scratch: every experiment on a dataset that a transfer experiment
    fine-tunes on, best first, with how its backbone started and trained."""
    datasets = sorted({r["dataset"] for r in rows if r["pretrained"]})
    if not datasets:
        return []
    lines = [
        "## Transfer learning",
        "",
        "Fine-tuned backbones against the same architecture trained from scratch on the same labels "
        "(notes 001, Transfer learning).",
        "",
        "| dataset | experiment | start | backbone | primary metric | test error over seeds |",
        "|---|---|---|---|---|---|",
    ]
    for dataset in datasets:
        group = sorted(
            (r for r in rows if r["dataset"] == dataset and r["value"] is not None),
            key=lambda r: r["value"],
            reverse=_higher_is_better(rows, dataset),
        )
        for r in group:
            p = r["pretrained"]
            start = f"`{p['path']}`" if p else "scratch (random init)"
            if not p:
                backbone = "trained"
            elif not p["freeze_backbone"]:
                backbone = "trained from the start"
            elif p["unfreeze_at_epoch"] is None:
                backbone = "frozen"
            else:
                backbone = f"frozen, trained from epoch {p['unfreeze_at_epoch']} (lr x {p['backbone_lr_ratio']})"
            lines.append(
                f"| {dataset} | `{r['experiment']}` | {start} | {backbone} | {r['metric']} {_fmt(r['value'])} | "
                f"{seed_summary(r['seeds'])} |"
            )
    return lines + [""]


def seed_summary(seeds: dict[str, Any] | None) -> str:
    """``mean ± std (min–max, n seeds)`` of a seeds study's test error, or ``–`` when it did not run."""
    if not seeds:
        return "–"
    return (
        f"{seeds['test_error_mean']:.4f} ± {seeds['test_error_std']:.4f} "
        f"({seeds['test_error_min']:.4f}–{seeds['test_error_max']:.4f}, {seeds['count']} seeds)"
    )


def claim_verdict(better: dict[str, Any] | None, than: dict[str, Any] | None, seeds: int = 3) -> str:
    """The verdict on "``better`` beats ``than``" from the two experiments' seeds studies (test errors).

    Args:
        better, than: the ``seeds`` summaries of ``metrics/diagnose/<experiment>.json`` (``count``,
            ``test_error_min``, ``test_error_max``, ...), or ``None`` where the study did not run.
        seeds: the claim's least number of seeds.

    Returns:
        ``holds`` when every seed of ``better`` has a lower test error than every seed of ``than`` (the ranges do
        not overlap, so the mean difference exceeds the seed spread); ``contradicted`` when every seed of ``than``
        is below every seed of ``better``; ``unclear`` when the ranges overlap or touch; ``not run`` when a study is
        missing or has fewer than ``seeds`` seeds.
    """
    if not better or not than or min(better["count"], than["count"]) < seeds:
        return "not run"
    if better["test_error_max"] < than["test_error_min"]:
        return "holds"
    if than["test_error_max"] < better["test_error_min"]:
        return "contradicted"
    return "unclear"


def collect_claims(params: Params, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per claim of ``params``: the claim's fields, both experiments' rows and :func:`claim_verdict`."""
    by_name = {r["experiment"]: r for r in rows}
    claims = []
    for name, claim in params.claims.items():
        better, than = by_name[claim.better], by_name[claim.than]
        claims.append(
            {
                "claim": name,
                "statement": claim.statement,
                "notes": claim.notes,
                "seeds": claim.seeds,
                "better": better,
                "than": than,
                "verdict": claim_verdict(better["seeds"], than["seeds"], claim.seeds),
            }
        )
    return claims


def _claims_section(claims: list[dict[str, Any]]) -> list[str]:
    """The notes' claims, each over the seed spread of both experiments, with its verdict."""
    if not claims:
        return []
    lines = [
        "## Claims of the notes",
        "",
        "Each claim compares test errors (the task's error unit) over the seeds of the `diagnose` stage's seeds study "
        "(trained as the train stage trains, augmented copies included, at the experiment's budget; mean ± std, "
        "min–max). It holds only when every seed of the first experiment beats every seed of the second; "
        "overlapping ranges are unclear. "
        "One run moves by points with the CPU kind and thread count (`benchmarks/REPRODUCIBILITY.md`), so the single "
        "run of the leaderboard is shown for reference only.",
        "",
        "| claim | notes | experiment | test error over seeds | than | test error over seeds | "
        "mean error of than minus experiment's (> 0 favours the claim) | single run | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        a, b = c["better"], c["than"]
        diff = (
            f"{b['seeds']['test_error_mean'] - a['seeds']['test_error_mean']:+.4f}"
            if a["seeds"] and b["seeds"]
            else "–"
        )
        single = f"{a['metric']} {_fmt(a['value'])} vs {_fmt(b['value'])}"
        lines.append(
            f"| {c['statement']} | {_fmt(c['notes'])} | `{a['experiment']}` | {seed_summary(a['seeds'])} | "
            f"`{b['experiment']}` | {seed_summary(b['seeds'])} | {diff} | {single} | **{c['verdict']}** |"
        )
    return lines + [""]


def _higher_is_better(rows: list[dict[str, Any]], dataset: str) -> bool:
    return next(r["higher_is_better"] for r in rows if r["dataset"] == dataset)


def _ranks(values: list[float]) -> list[int]:
    """Competition ranks of ``values`` sorted best first: tied values share the better rank (1, 1, 3)."""
    ranks: list[int] = []
    for i, value in enumerate(values):
        ranks.append(ranks[-1] if i and value == values[i - 1] else i + 1)
    return ranks


def render(rows: list[dict[str, Any]], claims: list[dict[str, Any]] | None = None) -> str:
    """The Markdown report: a leaderboard per task (best first), the transfer table, the notes' ``claims``
    (:func:`collect_claims`), then the diagnostic studies that ran."""
    lines = [
        "# deepnotes: experiment summary",
        "",
        "Written by the `report` stage from the DVC metrics files. Each task's errors are in its own unit "
        "(named under its heading); "
        "the verdict compares them with each experiment's `bias_variance.reference_error` (notes 000).",
        "",
    ]
    header = (
        "| rank | experiment | architecture | dataset | notes | primary metric | train / val / test error | "
        "bias/variance | gradients | params | train time (s) | s / epoch | model | MLflow run |"
    )
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    for task, group in sorted(by_task.items()):
        ran = sorted(
            (r for r in group if r["value"] is not None), key=lambda r: r["value"], reverse=group[0]["higher_is_better"]
        )
        lines += [
            f"## {task}",
            "",
            f"Error: {group[0]['error_unit']}.",
            "",
            header,
            "|" + "---|" * (header.count("|") - 1),
        ]
        for r, rank in zip(ran, _ranks([r["value"] for r in ran])):
            errors = " / ".join(_fmt(r[k]) for k in ("train_error", "val_error", "test_error"))
            lines.append(
                f"| {rank} | `{r['experiment']}` | {r['architecture']} | {r['dataset']} | {r['notes']} | "
                f"{r['metric']} {_fmt(r['value'])} | {errors} | {_fmt(r['verdict'])} | "
                f"{_fmt(r['gradient_flags'])} | {_fmt(r['num_params'])} | {_fmt(r['fit_seconds'], 1)} | "
                f"{_fmt(r['epoch_seconds'], 2)} | "
                f"{_fmt(r['model'])} | `{_fmt(r['run_id'])}` |"
            )
        for r in group:
            if r["value"] is None:
                lines.append(
                    f"| – | `{r['experiment']}` | {r['architecture']} | {r['dataset']} | {r['notes']} | "
                    "not run | | | | | | | | |"
                )
        lines.append("")
    lines += _transfer_section(rows)
    lines += _claims_section(claims or [])
    sections = [line for r in rows for line in r.get("section") or []]  # the tasks' own (Task.report_section)
    if sections:
        lines += ["## What the tasks show", "", *sections]
    studies = [r for r in rows if r["learning_curve"] or r["seeds"] or r["bootstrap"]]
    if studies:
        lines += ["## Diagnostic studies", ""]
        for r in studies:
            if r["learning_curve"]:
                lines.append(f"- `{r['experiment']}` learning curve: {r['learning_curve']}")
            if r["seeds"]:
                s = r["seeds"]
                lines.append(
                    f"- `{r['experiment']}` across {s['count']} seeds: test error {s['test_error_mean']:.4f} "
                    f"± {s['test_error_std']:.4f} (min {s['test_error_min']:.4f}, max {s['test_error_max']:.4f})"
                )
            if r["bootstrap"]:
                b = r["bootstrap"]
                lines.append(
                    f"- `{r['experiment']}` bootstrap ({b['rounds']} rounds): expected squared error "
                    f"{b['expected_loss']:.4f} = bias² {b['bias_squared']:.4f} + variance {b['variance']:.4f} "
                    f"+ noise {b['noise']:.4f}"
                )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_study_plots(
    params: Params, studies_root: Path = DIAGNOSTICS_ROOT, plots_root: Path = DIAGNOSTICS_PLOTS_ROOT
) -> list[Path]:
    """Write each non-empty study table of ``reports/diagnostics/<experiment>.json`` as
    ``plots/diagnostics/<study>/<experiment>.csv`` (DVC plots), so that experiments without a study add no empty chart.
    The folder is rebuilt from scratch: a study switched off loses its plot. Returns the files written."""
    import shutil

    staging = plots_root.with_name(plots_root.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    written = []
    for name in params.all_experiments:
        tables = _read(studies_root / f"{name}.json").get("tables", {})
        for study, rows in tables.items():
            if rows:
                path = staging / study / f"{name}.csv"
                atomic_write_text(path, _csv(COLUMNS[study], rows))
                written.append(plots_root / study / f"{name}.csv")
    staging.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(plots_root, ignore_errors=True)
    staging.rename(plots_root)
    return written


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report(params: Params, path: Path = REPORT_PATH) -> Path:
    """Write the study plots and the report (atomically) to ``path``; returns it."""
    write_study_plots(params)
    rows = collect(params)
    atomic_write_text(path, render(rows, collect_claims(params, rows)))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.stages.report", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    parser.add_argument("--output", type=Path, default=REPORT_PATH, help="report path (default: reports/summary.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = report(load_params(args.params), args.output)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
