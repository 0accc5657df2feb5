"""Wall time of a ``dvc repro``, per stage: run it, timestamp its output as it streams, write a table.

    python -m benchmarks.pipeline_walltime --repo /path/to/repo --log out.md [--results PATH | --no-results]
                                           [--raw-log out.log] [-- extra dvc repro arguments, e.g. --force]

DVC prints ``Running stage 'train@lenet5_mnist':`` when a stage starts (``Stage '...' didn't change, skipping`` when it
does not run) and ``Updating lock file 'dvc.lock'`` when a stage's outputs are hashed and recorded. A stage's time is
from its ``Running stage`` line to the next of those markers (the command itself plus hashing and caching its
outputs); what lies outside every stage (DVC's start-up, building the graph, checking what changed, writing the lock
file) is reported as ``dvc (outside stages)``. Lines are echoed as they arrive.

The markdown table goes to ``--log``. ``--results`` (default ``benchmarks/RESULTS.md`` of this repo, but only when the
measured repo runs the ``default`` profile) gets its section "Default-profile dvc repro wall time" replaced, atomically.
It is meant to run when the machine is otherwise quiet; the table says how many cores other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks._common import BIN, RESULTS_MD, ForeignLoad, atomic_write_text, machine_info, stage_env

RUNNING = re.compile(r"^Running stage '([^']+)'")
SKIPPED = re.compile(r"^Stage '([^']+)' didn't change, skipping")
LOCK = re.compile(r"^Updating lock file")

#: Markers of the section of RESULTS.md this script owns.
SECTION_BEGIN = "<!-- pipeline_walltime:begin -->"
SECTION_END = "<!-- pipeline_walltime:end -->"


@dataclass
class StageTime:
    """One stage of the run: ``status`` is ``ran`` or ``skipped``; times are seconds since the start of dvc."""

    name: str
    status: str
    start: float
    end: float | None = None

    @property
    def seconds(self) -> float:
        """Duration of the stage (0 for a skipped stage)."""
        return (self.end if self.end is not None else self.start) - self.start


@dataclass
class ReproTimeline:
    """Stage times parsed from a timestamped ``dvc repro`` output (see :func:`parse_timeline`)."""

    stages: list[StageTime] = field(default_factory=list)
    total: float = 0.0

    @property
    def outside_stages(self) -> float:
        """Seconds of the run not inside any stage: DVC's own start-up, graph, change checks and lock file."""
        return self.total - sum(s.seconds for s in self.stages)


def parse_timeline(lines: list[tuple[float, str]], total: float) -> ReproTimeline:
    """Build the per-stage timeline from ``(seconds since start, line)`` pairs of ``dvc repro`` output.

    A running stage ends at the next ``Running stage``, ``didn't change`` or ``Updating lock file`` line, or at
    ``total`` (the process end). Skipped stages take no time.
    """
    timeline = ReproTimeline(total=total)
    current: StageTime | None = None
    for t, line in lines:
        line = line.strip()
        running, skipped, lock = RUNNING.match(line), SKIPPED.match(line), LOCK.match(line)
        if (running or skipped or lock) and current is not None:
            current.end, current = t, None
        if running:
            current = StageTime(running.group(1), "ran", t)
            timeline.stages.append(current)
        elif skipped:
            timeline.stages.append(StageTime(skipped.group(1), "skipped", t, t))
    if current is not None:
        current.end = total
    return timeline


def run_repro(
    repo: Path, dvc_args: list[str], raw_log: Path | None = None, echo: bool = True
) -> tuple[ReproTimeline, int, float]:
    """Run ``dvc repro`` in ``repo`` with the venv first on ``PATH``, timestamping each output line as it arrives.

    Returns the timeline, dvc's exit status and the cores other processes used during the run.
    """
    dvc = str(BIN / "dvc") if (BIN / "dvc").exists() else "dvc"
    cmd = [dvc, "repro", *dvc_args]
    lines: list[tuple[float, str]] = []
    raw = open(raw_log, "w", encoding="utf-8") if raw_log else None  # noqa: SIM115 (closed below)
    try:
        with ForeignLoad() as load:
            start = time.perf_counter()
            proc = subprocess.Popen(
                cmd,
                cwd=repo,
                env=stage_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                errors="replace",
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                t = time.perf_counter() - start
                lines.append((t, line))
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                if raw:
                    raw.write(f"[{t:9.3f}] {line}")
            status = proc.wait()
            total = time.perf_counter() - start
    finally:
        if raw:
            raw.close()
    return parse_timeline(lines, total), status, load.cores


def repo_profile(repo: Path) -> str:
    """The profile a ``dvc repro`` in ``repo`` runs: ``DEEPNOTES_PROFILE``, else ``profile:`` of its params.yaml."""
    if os.environ.get("DEEPNOTES_PROFILE"):
        return os.environ["DEEPNOTES_PROFILE"]
    try:
        return str((yaml.safe_load((repo / "params.yaml").read_text()) or {}).get("profile", "default"))
    except (OSError, yaml.YAMLError):
        return "unknown"


def render(timeline: ReproTimeline, status: int, foreign: float, repo: Path, dvc_args: list[str]) -> str:
    """The markdown report: context, then one row per stage that ran (longest first), skipped stages, the time
    outside stages and the total."""
    info = machine_info()
    ran = sorted((s for s in timeline.stages if s.status == "ran"), key=lambda s: -s.seconds)
    skipped = [s.name for s in timeline.stages if s.status == "skipped"]
    total = timeline.total or 1.0
    out = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} with `python -m benchmarks.pipeline_walltime` on `{repo}` "
        f"(profile `{repo_profile(repo)}`): `{' '.join(['dvc', 'repro', *dvc_args])}`, exit status {status}. "
        f"{info['nproc']} cores; other processes used {foreign:.2f} cores on average during the run"
        + (" (the machine was busy: numbers are inflated)." if foreign > 0.2 else "."),
        "",
        "| stage | seconds | share |",
        "|---|---:|---:|",
    ]
    out += [f"| `{s.name}` | {s.seconds:.1f} | {100 * s.seconds / total:.0f}% |" for s in ran]
    out.append(
        f"| dvc (outside stages: start-up, graph, change checks, lock file) | {timeline.outside_stages:.1f} | "
        f"{100 * timeline.outside_stages / total:.0f}% |"
    )
    out.append(f"| **total** | **{timeline.total:.1f}** | 100% |")
    if skipped:
        out += ["", f"Unchanged, skipped ({len(skipped)}): " + ", ".join(f"`{name}`" for name in skipped) + "."]
    return "\n".join(out) + "\n"


def fill_results(results: Path, body: str) -> None:
    """Replace the text between the section markers of ``results`` with ``body`` (atomic write).

    Raises:
        ValueError: the markers are missing.
    """
    text = results.read_text(encoding="utf-8")
    begin, end = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{results}: no {SECTION_BEGIN} ... {SECTION_END} section to fill")
    atomic_write_text(results, text[: begin + len(SECTION_BEGIN)] + "\n" + body + text[end:])


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns ``dvc repro``'s exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_walltime", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="repository to run `dvc repro` in")
    parser.add_argument("--log", type=Path, required=True, help="markdown table of seconds per stage (written)")
    parser.add_argument("--raw-log", type=Path, default=None, help="also keep dvc's output with timestamps")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--results",
        type=Path,
        default=None,
        help="RESULTS.md whose wall-time section to fill (default: benchmarks/RESULTS.md, only when "
        "the repo runs the default profile)",
    )
    group.add_argument("--no-results", action="store_true", help="do not touch any RESULTS.md")
    parser.add_argument("dvc_args", nargs=argparse.REMAINDER, help="after `--`: extra `dvc repro` arguments")
    args = parser.parse_args(argv)
    dvc_args = [a for a in args.dvc_args if a != "--"] if args.dvc_args[:1] == ["--"] else args.dvc_args
    repo = args.repo.resolve()
    if not (repo / "dvc.yaml").exists():
        parser.error(f"{repo}: no dvc.yaml")
    timeline, status, foreign = run_repro(repo, dvc_args, args.raw_log)
    body = render(timeline, status, foreign, repo, dvc_args)
    atomic_write_text(args.log, body)
    print(f"\n{body}", end="")
    results = None if args.no_results else args.results
    if results is None and not args.no_results and repo_profile(repo) == "default":
        results = RESULTS_MD
    if results is not None:
        if status != 0:
            print(f"dvc repro failed (exit {status}): {results} left as it was", file=sys.stderr)
        else:
            fill_results(results, body)
            print(f"filled the wall-time section of {results}")
    elif not args.no_results:
        print(f"profile is {repo_profile(repo)!r}, not 'default': {RESULTS_MD} left as it was (use --results to force)")
    return status


if __name__ == "__main__":
    sys.exit(main())
