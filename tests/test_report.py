"""The report stage from hand-written metrics files (no training): its ranking in both metric directions, ties,
experiments that did not run, the transfer table, and the verdicts on the notes' claims over a seed spread.

The params are the real ``params.yaml`` cut down to a few experiments, so the tests follow its schema; every number
is written here by hand into ``tmp_path``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import ConfigError, Params, validate
from pipelines.stages.report import claim_verdict, collect, collect_claims, render, seed_summary

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def real_raw() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def params_with(
    raw: dict[str, Any], experiments: dict[str, str], transfer: tuple[str, ...] = (), claims: dict | None = None
) -> Params:
    """The real params with only ``experiments`` (``{name: the real experiment it copies}``), the ``transfer``
    experiments named, and ``claims`` (none by default)."""
    raw = copy.deepcopy(raw)
    real = raw["experiments"]
    raw["experiments"] = {name: copy.deepcopy(real[source]) for name, source in experiments.items()}
    raw["transfer"] = {name: raw["transfer"][name] for name in transfer}
    raw["claims"] = claims or {}
    raw.get("tuning", {}).pop("experiments", None)
    return validate(raw)


def write_metrics(root: Path, name: str, task: str, test: dict[str, float], seeds: list[float] | None = None) -> None:
    """``metrics/evaluate/<name>.json`` with ``test`` metrics, ``metrics/train/<name>.json``, and with ``seeds``
    (test errors) the seeds summary of ``metrics/diagnose/<name>.json`` as the diagnose stage writes it."""
    for stage, content in (
        ("evaluate", {"task": task, "test": test, "run_id": f"run-{name}"}),
        ("train", {"num_params": 10, "fit_seconds": 1.0}),
    ):
        (root / stage).mkdir(parents=True, exist_ok=True)
        (root / stage / f"{name}.json").write_text(json.dumps(content))
    if seeds is not None:
        import statistics

        (root / "diagnose").mkdir(parents=True, exist_ok=True)
        summary = {
            "count": len(seeds),
            "test_error_mean": statistics.fmean(seeds),
            "test_error_std": statistics.stdev(seeds),
            "test_error_min": min(seeds),
            "test_error_max": max(seeds),
        }
        (root / "diagnose" / f"{name}.json").write_text(json.dumps({"experiment": name, "seeds": summary}))


def leaderboard(markdown: str, task: str) -> list[tuple[str, str]]:
    """``[(rank, experiment)]`` of the ``## <task>`` leaderboard, in the order written."""
    section = markdown.split(f"\n## {task}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| (\d+|–) \| `([^`]+)` \|", section, flags=re.MULTILINE)


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the table under ``## <heading>``, as lists of cells."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


# --------------------------------------------------------------------------------------------------- ranking


def test_accuracy_ranks_higher_first_with_ties_sharing_a_rank(real_raw, tmp_path):
    params = params_with(
        real_raw, {"perceptron_and": "perceptron_and", "perceptron_or": "perceptron_or", "mlp_churn": "mlp_churn"}
    )
    write_metrics(tmp_path, "perceptron_and", "binary", {"acc": 0.75})
    write_metrics(tmp_path, "perceptron_or", "binary", {"acc": 0.9})
    write_metrics(tmp_path, "mlp_churn", "binary", {"acc": 0.75})
    markdown = render(collect(params, tmp_path))
    # best first; the tie shares rank 2 and keeps the params order
    assert leaderboard(markdown, "binary") == [("1", "perceptron_or"), ("2", "perceptron_and"), ("2", "mlp_churn")]
    assert "test_acc 0.9000" in markdown


def test_rmse_ranks_lower_first_and_a_tie_skips_the_next_rank(real_raw, tmp_path):
    names = {"mlp_a": "mlp_melbourne", "mlp_b": "mlp_melbourne", "mlp_c": "mlp_melbourne", "mlp_d": "mlp_melbourne"}
    params = params_with(real_raw, names)
    for name, rmse in (("mlp_a", 2.5), ("mlp_b", 2.2), ("mlp_c", 2.2), ("mlp_d", 3.0)):
        write_metrics(tmp_path, name, "regression", {"rmse": rmse})
    markdown = render(collect(params, tmp_path))
    assert leaderboard(markdown, "regression") == [("1", "mlp_b"), ("1", "mlp_c"), ("3", "mlp_a"), ("4", "mlp_d")]
    assert "Error: RMSE." in markdown


def test_missing_experiments_are_listed_as_not_run_after_the_ranked_ones(real_raw, tmp_path):
    params = params_with(
        real_raw, {"perceptron_and": "perceptron_and", "perceptron_or": "perceptron_or", "mlp_churn": "mlp_churn"}
    )
    write_metrics(tmp_path, "perceptron_or", "binary", {"acc": 1.0})
    markdown = render(collect(params, tmp_path))  # perceptron_and and mlp_churn have no files at all
    assert leaderboard(markdown, "binary") == [("1", "perceptron_or"), ("–", "perceptron_and"), ("–", "mlp_churn")]
    assert markdown.count("| not run |") == 2


def test_a_corrupt_metrics_file_names_it(real_raw, tmp_path):
    params = params_with(real_raw, {"perceptron_and": "perceptron_and"})
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "perceptron_and.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"perceptron_and\.json: not valid JSON"):
        collect(params, tmp_path)


# -------------------------------------------------------------------------------------------------- transfer

TRANSFER = ("resnet20_cifar10_5to9_frozen", "resnet20_cifar10_5to9_finetune")


def test_transfer_table_ranks_best_first_with_start_backbone_and_seed_spread(real_raw, tmp_path):
    params = params_with(real_raw, {"resnet20_cifar10_5to9_scratch": "resnet20_cifar10_5to9_scratch"}, TRANSFER)
    write_metrics(tmp_path, "resnet20_cifar10_5to9_scratch", "multiclass", {"acc": 0.59}, seeds=[0.41, 0.43, 0.42])
    write_metrics(tmp_path, "resnet20_cifar10_5to9_frozen", "multiclass", {"acc": 0.56})
    write_metrics(tmp_path, "resnet20_cifar10_5to9_finetune", "multiclass", {"acc": 0.64})
    rows = table_rows(render(collect(params, tmp_path)), "Transfer learning")
    assert [r[1] for r in rows] == [
        "`resnet20_cifar10_5to9_finetune`",
        "`resnet20_cifar10_5to9_scratch`",
        "`resnet20_cifar10_5to9_frozen`",
    ]
    finetune, scratch, frozen = rows
    assert finetune[2] == "`checkpoints/resnet20_cifar10_0to4/network.pt`"
    assert finetune[3] == "frozen, trained from epoch 2 (lr x 0.2)"
    assert (scratch[2], scratch[3]) == ("scratch (random init)", "trained")
    assert frozen[3] == "frozen"
    assert finetune[4] == "test_acc 0.6400"
    assert scratch[5] == "0.4200 ± 0.0100 (0.4100–0.4300, 3 seeds)"
    assert frozen[5] == "–"


def test_no_transfer_experiment_no_transfer_table(real_raw, tmp_path):
    params = params_with(real_raw, {"resnet20_cifar10_5to9_scratch": "resnet20_cifar10_5to9_scratch"})
    write_metrics(tmp_path, "resnet20_cifar10_5to9_scratch", "multiclass", {"acc": 0.59})
    assert "## Transfer learning" not in render(collect(params, tmp_path))


# ------------------------------------------------------------------------------------------------ the claims


def seeds(*errors: float) -> dict[str, Any]:
    return {"count": len(errors), "test_error_min": min(errors), "test_error_max": max(errors)}


@pytest.mark.parametrize(
    ("better", "than", "verdict"),
    [
        (seeds(0.40, 0.41, 0.42), seeds(0.43, 0.45, 0.44), "holds"),  # every seed of better below every seed of than
        (seeds(0.50, 0.52, 0.51), seeds(0.43, 0.45, 0.44), "contradicted"),
        (seeds(0.40, 0.44, 0.42), seeds(0.43, 0.45, 0.44), "unclear"),  # means differ by 0.02, ranges overlap
        (seeds(0.40, 0.43, 0.42), seeds(0.43, 0.45, 0.44), "unclear"),  # ranges touch: no strict win
        (seeds(0.40, 0.41), seeds(0.43, 0.45, 0.44), "not run"),  # two seeds are fewer than the claim's three
        (None, seeds(0.43, 0.45, 0.44), "not run"),
        (seeds(0.40, 0.41, 0.42), None, "not run"),
    ],
)
def test_claim_verdict(better, than, verdict):
    assert claim_verdict(better, than, seeds=3) == verdict


def test_claim_verdict_needs_the_claims_seed_count():
    assert claim_verdict(seeds(0.1, 0.2, 0.3), seeds(0.5, 0.6, 0.7), seeds=4) == "not run"
    assert claim_verdict(seeds(0.1, 0.2, 0.3, 0.3), seeds(0.5, 0.6, 0.7, 0.8), seeds=4) == "holds"


CLAIMS = {
    "skip_connections": {
        "statement": "skip connections beat the plain net",
        "notes": "notes 002",
        "better": "resnet20_cifar10",
        "than": "plain20_cifar10",
    },
    "frozen_backbone": {
        "statement": "a frozen pretrained backbone beats scratch",
        "better": "resnet20_cifar10_5to9_frozen",
        "than": "resnet20_cifar10_5to9_scratch",
    },
}
CLAIMED = {name: name for name in ("resnet20_cifar10", "plain20_cifar10", "resnet20_cifar10_5to9_scratch")}


def test_claims_table_shows_the_seed_spread_and_a_verdict_one_seed_cannot_flip(real_raw, tmp_path):
    params = params_with(real_raw, CLAIMED, ("resnet20_cifar10_5to9_frozen",), CLAIMS)
    # the single runs say skip connections win by 0.6 points, but the seeds overlap: unclear, not "holds"
    write_metrics(tmp_path, "resnet20_cifar10", "multiclass", {"acc": 0.4294}, seeds=[0.5706, 0.600, 0.585])
    write_metrics(tmp_path, "plain20_cifar10", "multiclass", {"acc": 0.4229}, seeds=[0.5771, 0.560, 0.590])
    # the single runs say scratch wins, and so does every seed: the claim is contradicted
    write_metrics(tmp_path, "resnet20_cifar10_5to9_scratch", "multiclass", {"acc": 0.59}, seeds=[0.41, 0.42, 0.40])
    write_metrics(tmp_path, "resnet20_cifar10_5to9_frozen", "multiclass", {"acc": 0.55}, seeds=[0.44, 0.45, 0.46])
    rows = collect(params, tmp_path)
    claims = collect_claims(params, rows)
    assert [c["verdict"] for c in claims] == ["unclear", "contradicted"]
    table = table_rows(render(rows, claims), "Claims of the notes")
    skip, frozen = table
    assert skip[0] == "skip connections beat the plain net" and skip[1] == "notes 002"
    assert (skip[2], skip[4]) == ("`resnet20_cifar10`", "`plain20_cifar10`")
    assert skip[3] == seed_summary(rows[0]["seeds"]) and "3 seeds" in skip[3]
    assert skip[6] == f"{(0.5771 + 0.560 + 0.590) / 3 - (0.5706 + 0.600 + 0.585) / 3:+.4f}"
    assert skip[7] == "test_acc 0.4294 vs 0.4229"
    assert skip[8] == "**unclear**"
    assert frozen[1] == "–" and frozen[6] == "-0.0400" and frozen[8] == "**contradicted**"


def test_a_claim_whose_seeds_did_not_run_says_so(real_raw, tmp_path):
    params = params_with(real_raw, CLAIMED, ("resnet20_cifar10_5to9_frozen",), CLAIMS)
    write_metrics(tmp_path, "resnet20_cifar10", "multiclass", {"acc": 0.43}, seeds=[0.57, 0.58, 0.56])
    write_metrics(tmp_path, "plain20_cifar10", "multiclass", {"acc": 0.42})  # no seeds study
    rows = collect(params, tmp_path)
    skip, frozen = table_rows(render(rows, collect_claims(params, rows)), "Claims of the notes")
    assert skip[5] == "–" and skip[6] == "–" and skip[8] == "**not run**"
    assert frozen[7] == "test_acc – vs –" and frozen[8] == "**not run**"


def test_no_claims_no_claims_table(real_raw, tmp_path):
    params = params_with(real_raw, CLAIMED)
    rows = collect(params, tmp_path)
    assert "## Claims of the notes" not in render(rows, collect_claims(params, rows))


# ------------------------------------------------------------------------------------- the claims in params


def test_a_claim_switches_on_the_seeds_study_of_its_experiments(real_raw):
    claims = {"c": {"statement": "s", "better": "resnet20_cifar10", "than": "plain20_cifar10", "seeds": 4}}
    params = params_with(real_raw, CLAIMED | {"mlp_churn": "mlp_churn"}, claims=claims)
    for name in ("resnet20_cifar10", "plain20_cifar10"):
        study = params.experiment(name).diagnostics.seeds
        assert study.enabled and study.count == 4 and study.max_epochs is None  # the experiment's own budget
    assert not params.experiment("resnet20_cifar10_5to9_scratch").diagnostics.seeds.enabled
    assert params.experiment("mlp_churn").diagnostics.seeds.max_epochs == 10  # untouched where no claim names it


def test_the_real_claims_cover_the_default_profiles_comparisons(real_raw):
    params = validate(real_raw)
    pairs = {(c.better, c.than) for c in params.claims.values()}
    assert ("resnet20_cifar10", "plain20_cifar10") in pairs
    assert ("resnet20_cifar10_5to9_frozen", "resnet20_cifar10_5to9_scratch") in pairs
    for claim in params.claims.values():
        assert claim.seeds >= 3
        for name in (claim.better, claim.than):
            assert params.experiment(name).diagnostics.seeds.count >= 3


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"better": "nope", "than": "plain20_cifar10"}, r"claims\.c\.better: 'nope' is not an experiment"),
        ({"better": "plain20_cifar10", "than": "plain20_cifar10"}, r"claims\.c\.than: the same experiment"),
        (
            {"better": "resnet20_cifar10", "than": "resnet20_cifar10_5to9_scratch"},
            r"claims\.c: resnet20_cifar10 and resnet20_cifar10_5to9_scratch differ in dataset",
        ),
        ({"better": "resnet20_cifar10", "than": "plain20_cifar10", "seeds": 2}, r"claims\.c\.seeds"),
        ({"better": "resnet20_cifar10", "than": "plain20_cifar10", "oops": 1}, r"claims\.c\.oops"),
    ],
)
def test_bad_claims_name_the_key_path(real_raw, claim, message):
    with pytest.raises(ConfigError, match=message):
        params_with(real_raw, CLAIMED, claims={"c": {"statement": "s"} | claim})


def test_the_report_stage_depends_on_the_claims(real_raw):
    from pipelines.stages.resolve import resolved

    params = params_with(real_raw, CLAIMED, ("resnet20_cifar10_5to9_frozen",), CLAIMS)
    report = resolved(params)["report.json"]
    assert report["claims"]["skip_connections"]["better"] == "resnet20_cifar10"
    assert report["claims"]["frozen_backbone"]["seeds"] == 3
