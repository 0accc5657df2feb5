"""``claims:`` of ``params.yaml``: the comparisons the report presents as the notes' claims, each backed by a seed
spread (:class:`ClaimConfig`, :func:`apply_claims`).

One run per experiment is one draw: on another CPU kind or thread count the same seed lands elsewhere
(``benchmarks/REPRODUCIBILITY.md``). So a claim names the experiment the notes say wins (``better``) and the one it
beats (``than``), and every experiment named in a claim runs the ``diagnose`` stage's seeds study with at least
``seeds`` seeds (:func:`apply_claims` switches it on, so the seeds are declared once, on the claim). The report's
verdict compares the two seed ranges (:func:`pipelines.stages.report.claim_verdict`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from pipelines.config.base import Strict

if TYPE_CHECKING:
    from pipelines.config.experiment import ExperimentConfig


class ClaimConfig(Strict):
    """One claim of the notes, as a comparison of two experiments on the same dataset."""

    statement: str = Field(description="the claim in words, e.g. 'skip connections beat the plain net'")
    notes: str | None = Field(None, description="where the notes make it, e.g. 'notes 002, Purpose of skip ...'")
    better: str = Field(description="the experiment the claim says wins")
    than: str = Field(description="the experiment it says loses")
    seeds: int = Field(3, ge=3, le=100, description="seeds per experiment (the diagnose stage's seeds study)")


def apply_claims(claims: dict[str, ClaimConfig], sections: dict[str, dict[str, ExperimentConfig]]) -> None:
    """Check ``claims`` against the experiments and switch on the seeds study of each experiment they name.

    Args:
        claims: ``claims:`` of params.yaml.
        sections: ``{"experiments": ..., "transfer": ...}``; the named experiments are replaced in place by copies
            whose ``diagnostics.seeds`` is enabled with ``count`` at least the claim's ``seeds`` (a larger count or
            a study budget set on the experiment is kept).

    Raises:
        ValueError: naming ``claims.<name>.<key>``: an unknown experiment, ``better`` equal to ``than``, or two
            experiments on different datasets or tasks (their errors would not compare).
    """
    experiments = {name: exp for section in sections.values() for name, exp in section.items()}
    for name, claim in claims.items():
        for key in ("better", "than"):
            if getattr(claim, key) not in experiments:
                raise ValueError(
                    f"claims.{name}.{key}: {getattr(claim, key)!r} is not an experiment under experiments or transfer"
                )
        if claim.better == claim.than:
            raise ValueError(f"claims.{name}.than: the same experiment as better ({claim.better!r})")
        a, b = experiments[claim.better], experiments[claim.than]
        for key in ("dataset", "task"):
            if getattr(a, key) != getattr(b, key):
                raise ValueError(
                    f"claims.{name}: {claim.better} and {claim.than} differ in {key} "
                    f"({getattr(a, key)!r} vs {getattr(b, key)!r}); a claim compares errors on the same {key}"
                )
    for claim in claims.values():
        for exp_name in (claim.better, claim.than):
            for section in sections.values():
                if exp_name in section:
                    exp = section[exp_name]
                    seeds = exp.diagnostics.seeds
                    wanted = seeds.model_copy(update={"enabled": True, "count": max(seeds.count, claim.seeds)})
                    diagnostics = exp.diagnostics.model_copy(update={"seeds": wanted})
                    section[exp_name] = exp.model_copy(update={"diagnostics": diagnostics})
