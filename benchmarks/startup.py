"""Start-up cost of each DVC stage, and of a no-op ``dvc repro``.

    python -m benchmarks.startup [--repeats 5] [--keep]

Every DVC stage is a new Python process, so what a stage pays before its first useful work is paid once per stage
and dataset/experiment. Measured in a temporary copy of the repo (``benchmarks._common.make_tiny_repo``: the
pipeline code, ``dvc.yaml``, ``params.yaml`` cut to ``profile: tiny``, the logic datasets and the ``perceptron_*``
experiments, in a fresh git repository), so nothing in the working repo is touched:

1. one ``dvc repro`` (cold: every stage runs), then ``repeats`` no-op ``dvc repro`` (median; each must run nothing);
2. per stage, in rounds (clean rounds only when the machine allows, see :class:`benchmarks._common.Policy`):
   the wall time of ``python -c pass`` (interpreter baseline), of ``python -c "import pipelines.<stage>"`` (the
   stage module's import), and of the whole stage process on the smallest data
   (``prepare logic_and``, ``augment logic_and``, ``train perceptron_and``, ``evaluate perceptron_and``); for
   ``train`` also ``first_step_seconds`` and ``fit_seconds`` from ``metrics/train/perceptron_and.json`` (time from
   ``pipelines/stages/train.py``'s first line to the first training batch, and of ``trainer.fit``);
3. per stage, one run under ``python -X importtime``: the total import time inside the real stage run (lazy imports
   included) and the packages that cost most.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import (
    BIN,
    OUT_DIR,
    REPO_ROOT,
    Policy,
    atomic_write_text,
    collect_rounds,
    git_commit,
    machine_info,
    make_tiny_repo,
    median,
    stage_env,
    temporary_dir,
    timed,
    tiny_params,
    write_json,
)

#: The stage processes measured, with the smallest real input of each.
STAGES: dict[str, list[str]] = {
    "prepare": ["logic_and"],
    "augment": ["logic_and"],
    "train": ["perceptron_and"],
    "evaluate": ["perceptron_and"],
}


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``cmd``; returns ``seconds`` (wall, from just before the spawn to the exit), ``stdout`` and ``stderr``.

    Raises:
        RuntimeError: non-zero exit (with the command and the tail of its output).
    """
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode} in {cwd}\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-3000:]}"
        )
    return {"seconds": seconds, "stdout": proc.stdout, "stderr": proc.stderr}


#: Our own packages: their import time is attributed to the libraries they pull in.
PROJECT_PACKAGES = frozenset({"pipelines", "models", "benchmarks"})


def parse_importtime(stderr: str, top: int = 8) -> dict[str, Any]:
    """Summarise ``python -X importtime`` output.

    Returns ``total_s`` (sum of the cumulative times of the top-level imports: all import time of the process) and
    ``top``: the ``top`` costliest libraries as ``[name, seconds]``, each counted inclusively (with what it pulls
    in) at its outermost import that is not inside another library's import; our own packages (:data:`
    PROJECT_PACKAGES`) are looked through, so ``models`` importing ``lightning`` is counted as ``lightning``.
    """
    pattern = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")
    # importtime prints children before their parent, indented two spaces per level below the top (one space).
    nodes: list[tuple[int, str, float, list]] = []  # (depth, name, cumulative s, children)
    pending: list[tuple[int, str, float, list]] = []
    for line in stderr.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        depth = (len(match.group(3)) - 1) // 2
        children = []
        while pending and pending[-1][0] > depth:
            children.insert(0, pending.pop())
        node = (depth, match.group(4), int(match.group(2)) / 1e6, children)
        pending.append(node)
        if depth == 0:
            nodes.append(node)
    total = sum(node[2] for node in nodes)
    by_library: dict[str, float] = {}

    def visit(node: tuple[int, str, float, list]) -> None:
        root = node[1].split(".")[0]
        if root in PROJECT_PACKAGES:
            for child in node[3]:
                visit(child)
        else:
            by_library[root] = by_library.get(root, 0.0) + node[2]

    for node in nodes:
        visit(node)
    ranked = sorted(by_library.items(), key=lambda kv: -kv[1])[:top]
    return {"total_s": round(total, 3), "top": [[name, round(sec, 3)] for name, sec in ranked]}


def recorded_default_runs() -> dict[str, Any]:
    """``first_step_seconds``/``fit_seconds`` from this checkout's ``metrics/train/*.json`` (read only)."""
    out: dict[str, Any] = {}
    for path in sorted((REPO_ROOT / "metrics" / "train").glob("*.json")):
        try:
            data = json.loads(path.read_text())
            out[path.stem] = {
                "first_step_seconds": float(data["first_step_seconds"]),
                "fit_seconds": float(data["fit_seconds"]),
                "written": time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime)),
            }
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


@dataclass
class Variant:
    """One way of running the stages: a tiny repo, an environment, and the stage command line."""

    label: str
    repo: Path
    env: dict[str, str]
    command: Callable[[str, list[str]], list[str]]
    warm: bool = False

    def also(self) -> list[int | None]:
        """The warm server's pid (its children's CPU is this variant's own, not another process's)."""
        from pipelines.warm import server_pid

        return [server_pid(self.env)] if self.warm else []


def _launcher(stage: str, args: list[str]) -> list[str]:
    return [str(BIN / "python"), "-m", "pipelines.stages", stage, *args]


def _direct(stage: str, args: list[str]) -> list[str]:
    return [str(BIN / "python"), "-m", f"pipelines.stages.{stage}", *args]


def export_revision(rev: str, dest: Path) -> Path:
    """``git archive`` revision ``rev`` of this repo into ``dest`` (a new folder); returns ``dest``.

    Raises:
        RuntimeError: ``rev`` is not a revision of this repo.
    """
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO_ROOT, capture_output=True)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {rev}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def measure(
    repeats: int = 5,
    quiet_wait: float = 60.0,
    keep: bool = False,
    baseline: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the start-up benchmark; returns the results (also written to ``benchmarks/out/startup.json``).

    Args:
        repeats: no-op ``dvc repro`` runs, and clean rounds of the per-stage measurements.
        quiet_wait: seconds to wait for a quiet machine before each round (0: never wait).
        keep: keep the temporary repos (their paths are in the results).
        baseline: a git revision to measure side by side, in the same rounds (``before``): its stages run as its
            ``dvc.yaml`` ran them, ``python -m pipelines.stages.<stage>``.
        log: where progress lines go.
    """
    env = stage_env()
    python, dvc = str(BIN / "python"), str(BIN / "dvc")
    policy = Policy(repeats, 2 * repeats, quiet_wait, log)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "git_commit": git_commit(),
        "baseline": baseline,
        "repeats": repeats,
    }
    with temporary_dir("deepnotes-startup-", keep=keep) as tmp:
        repo = make_tiny_repo(tmp / "repo", env=env)
        variants = [
            Variant("cold", repo, env | {"DEEPNOTES_WARM": "0"}, _launcher),
            Variant("warm", repo, env, _launcher, warm=True),
        ]
        repos = {"after": repo}
        if baseline:
            before = make_tiny_repo(tmp / "before", source=export_revision(baseline, tmp / "src"), env=env)
            variants.insert(0, Variant(f"before ({baseline})", before, env, _direct))
            repos["before"] = before
        results["repos"] = {k: str(v) for k, v in repos.items()} if keep else "(temporary, removed)"
        log(f"tiny repos: {repos}")

        # 1. dvc repro: cold once, then no-op, per repo.
        results["dvc_repro_cold"], results["dvc_repro_noop"] = {}, {}
        for side, path in repos.items():
            cold = timed(lambda path=path: run([dvc, "repro"], path, env))
            stages_run = re.findall(r"Running stage '([^']+)'", cold["stdout"])
            results["dvc_repro_cold"][side] = {
                "seconds": round(cold["seconds"], 2),
                "stages_run": len(stages_run),
                "foreign_cores": round(cold["foreign_cores"], 2),
            }
            log(f"{side}: cold dvc repro {cold['seconds']:.1f} s, {len(stages_run)} stages")

        def noop_round(r: int) -> dict[str, dict[str, Any]]:
            out = {}
            for side, path in repos.items():
                result = timed(lambda path=path: run([dvc, "repro"], path, env))
                if "Running stage" in result["stdout"]:
                    raise RuntimeError(f"the second dvc repro was not a no-op:\n{result['stdout'][-2000:]}")
                out[side] = result
            return out

        rounds, info = collect_rounds(noop_round, policy, "no-op dvc repro")
        for side in repos:
            noop = [r[side]["seconds"] for r in rounds]
            results["dvc_repro_noop"][side] = {
                "median_s": round(median(noop), 3),
                "seconds": [round(s, 3) for s in noop],
            }
        results["dvc_repro_noop"]["rounds"] = info

        # 2. Whole stage processes, every variant in every round, interleaved.
        warm_env = next(v.env for v in variants if v.warm)
        subprocess.run([python, "-m", "pipelines.warm", "start", "--wait", "300"], cwd=repo, env=warm_env, check=True)
        commands: dict[str, tuple[Variant, list[str]]] = {"python -c pass": (variants[-1], [python, "-c", "pass"])}
        for stage, args in STAGES.items():
            for variant in variants:
                commands[f"{variant.label} {stage}"] = (variant, variant.command(stage, args))

        def stage_round(r: int) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for name, (variant, cmd) in commands.items():
                out[name] = timed(lambda cmd=cmd, variant=variant: run(cmd, variant.repo, variant.env), variant.also())
                if name.endswith(" train"):
                    summary = json.loads(
                        (variant.repo / "metrics" / "train" / f"{STAGES['train'][0]}.json").read_text()
                    )
                    out[name]["first_step_seconds"] = summary["first_step_seconds"]
                    out[name]["fit_seconds"] = summary["fit_seconds"]
            return out

        rounds, info = collect_rounds(stage_round, policy, "stage start-up")
        per_command = {name: [r[name]["seconds"] for r in rounds] for name in commands}
        results["python_baseline_s"] = round(median(per_command["python -c pass"]), 3)
        stages: dict[str, Any] = {}
        for stage in STAGES:
            stages[stage] = {}
            for variant in variants:
                name = f"{variant.label} {stage}"
                proc = per_command[name]
                row: dict[str, Any] = {
                    "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(commands[name][1])),
                    "process_wall_s": round(median(proc), 3),
                    "process_wall_all": [round(s, 3) for s in proc],
                }
                if stage == "train":
                    fits = [r[name]["fit_seconds"] for r in rounds]
                    row["fit_seconds"] = round(median(fits), 3)
                    row["first_step_seconds"] = round(median([r[name]["first_step_seconds"] for r in rounds]), 3)
                    row["fixed_s"] = round(median([p - f for p, f in zip(proc, fits)]), 3)
                else:
                    row["fixed_s"] = row["process_wall_s"]
                stages[stage][variant.label] = row
        results["stages"] = stages
        results["stage_rounds"] = info

        # 3. Import time inside each real stage run, cold.
        results["imports_in_run"] = {}
        for stage, args in STAGES.items():
            out = run([python, "-X", "importtime", "-m", f"pipelines.stages.{stage}", *args], repo, env)
            results["imports_in_run"][stage] = parse_importtime(out["stderr"])
            atomic_write_text(OUT_DIR / f"importtime_{stage}.txt", out["stderr"])
        subprocess.run([python, "-m", "pipelines.warm", "stop"], cwd=repo, env=warm_env, check=False)
    results["recorded_default_runs"] = recorded_default_runs()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    write_json("startup", results)
    return results


def zoo_params(raw: dict[str, Any], experiments: int) -> dict[str, Any]:
    """:func:`benchmarks._common.tiny_params` with ``experiments`` perceptron experiments (``zoo_00``, ...: copies
    of ``perceptron_and``/``_or``/``_xor`` in turn, each with its own learning rate, so each is its own stage set):
    a pipeline as long as the notes' whole zoo, at the cost of a perceptron per experiment."""
    raw = tiny_params(raw)
    bases = [raw["experiments"][k] for k in sorted(raw["experiments"])]
    raw["experiments"] = {}
    for i in range(experiments):
        exp = json.loads(json.dumps(bases[i % len(bases)]))
        exp.setdefault("optimizer", {})["lr"] = round(0.1 + 0.01 * i, 3)
        raw["experiments"][f"zoo_{i:02d}"] = exp
    raw["tuning"]["experiments"] = {}
    return raw


def measure_noop_zoo(experiments: int, repeats: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The no-op ``dvc repro`` of a pipeline with ``experiments`` experiments (:func:`zoo_params`): one cold repro,
    then ``repeats`` no-op ones (each must run nothing). Returns the stage count and the no-op times."""
    env = stage_env()
    dvc = str(BIN / "dvc")
    with temporary_dir("deepnotes-zoo-") as tmp:
        repo = make_tiny_repo(tmp / "repo", env=env)
        raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
        (repo / "params.yaml").write_text(yaml.safe_dump(zoo_params(raw, experiments), sort_keys=False))
        subprocess.run(["git", "commit", "-qam", "zoo"], cwd=repo, env=env, check=True)
        cold = run([dvc, "repro"], repo, env, timeout=7200)
        stages = len(re.findall(r"Running stage '([^']+)'", cold["stdout"]))
        log(f"zoo of {experiments} experiments: cold dvc repro {cold['seconds']:.0f} s, {stages} stages")
        noop = []
        for _ in range(repeats):
            result = run([dvc, "repro"], repo, env)
            if "Running stage" in result["stdout"]:
                raise RuntimeError(f"the second dvc repro was not a no-op:\n{result['stdout'][-2000:]}")
            noop.append(round(result["seconds"], 3))
            log(f"zoo no-op dvc repro: {result['seconds']:.2f} s")
        subprocess.run([str(BIN / "python"), "-m", "pipelines.warm", "stop"], cwd=repo, env=env, check=False)
    return {
        "experiments": experiments,
        "stages": stages,
        "cold_s": round(cold["seconds"], 1),
        "noop_median_s": round(median(noop), 3),
        "noop_s": noop,
    }


STARTUP_MD = REPO_ROOT / "benchmarks" / "STARTUP.md"


def render_markdown(results: dict[str, Any]) -> str:
    """``benchmarks/STARTUP.md`` from the results of :func:`measure` (and :func:`measure_noop_zoo`)."""
    machine = results["machine"]
    lines = [
        "# Stage start-up: what a stage process costs besides its work",
        "",
        f"Measured {results['date']} by `python -m benchmarks.startup"
        + (f" --baseline {results['baseline']}" if results.get("baseline") else "")
        + f"` at commit `{results['git_commit']}` on {machine.get('cpu', 'this machine')} "
        f"({machine.get('nproc', '?')} cores). Each variant runs in the same rounds, interleaved: "
        f"{results['stage_rounds']['rounds_run']} rounds run, {results['stage_rounds']['clean_rounds']} clean "
        f"(medians from {results['stage_rounds']['medians_from']}). Tiny repos (`profile: tiny`, the logic datasets, "
        "the `perceptron_*` experiments), so a stage's work is a few milliseconds and its wall time is its fixed cost.",
        "",
        "- **before**: the baseline revision, each stage a cold `python -m pipelines.stages.<stage>` process;",
        "- **cold**: this revision with `DEEPNOTES_WARM=0` (every stage imports torch, Lightning and MLflow itself);",
        "- **warm**: this revision as `dvc.yaml` runs it, `python -m pipelines.stages <stage>`, forked from the warm "
        "stage server (`pipelines/warm.py`).",
        "",
        "*Fixed cost* is the process wall time, spawn to exit, less `trainer.fit` for `train` (the perceptron's fit, "
        "a few epochs on 4 rows, is in the table too).",
        "",
        "A round is *contended* when processes other than the one measured used more than 0.2 cores meanwhile. A warm "
        "child's CPU time reaches the server's account when the server reaps it, a moment after the client has "
        "exited, so a warm run can count its own child as another process (about one core): when every round is "
        "contended by about one core, that is why, and the medians come from all rounds, still interleaved.",
        "",
        "| stage | variant | process wall s | fixed s | fit s | all rounds s |",
        "|---|---|---:|---:|---:|---|",
    ]
    for stage, rows in results["stages"].items():
        for label, row in rows.items():
            fit = f"{row['fit_seconds']:.2f}" if "fit_seconds" in row else ""
            runs = ", ".join(f"{v:.2f}" for v in row["process_wall_all"])
            lines.append(
                f"| `{stage}` | {label} | {row['process_wall_s']:.2f} | {row['fixed_s']:.2f} | {fit} | {runs} |"
            )
    noop = results["dvc_repro_noop"]
    lines += [
        "",
        "No-op `dvc repro` of the same tiny repos (median): "
        + ", ".join(f"{side} {row['median_s']:.2f} s" for side, row in noop.items() if side != "rounds")
        + ". Cold `dvc repro` of each (every stage runs once): "
        + ", ".join(
            f"{side} {row['seconds']:.1f} s ({row['stages_run']} stages)"
            for side, row in results["dvc_repro_cold"].items()
        )
        + ".",
    ]
    zoo = results.get("noop_zoo")
    if zoo:
        lines += [
            "",
            f"No-op `dvc repro` with {zoo['experiments']} experiments ({zoo['stages']} stages, about the notes' "
            f"whole zoo; perceptrons, so the cold run took only {zoo['cold_s']:.0f} s): median "
            f"**{zoo['noop_median_s']:.2f} s** (runs: {', '.join(f'{v:.2f}' for v in zoo['noop_s'])}).",
        ]
    imports = results.get("imports_in_run", {})
    if imports:
        lines += ["", "Imports inside one cold stage run (`python -X importtime`, s, with what each pulls in):", ""]
        for stage, row in imports.items():
            top = ", ".join(f"{name} {sec:.2f}" for name, sec in row["top"][:5])
            lines.append(f"- `{stage}`: {row['total_s']:.2f} s in all; {top}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: measure, write ``benchmarks/STARTUP.md`` and print a summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="no-op repros and clean rounds per stage (default 5)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for a quiet machine before each round (default 60; 0: never)",
    )
    parser.add_argument("--baseline", default=None, help="a git revision to measure side by side (e.g. HEAD~3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repos")
    parser.add_argument(
        "--zoo", type=int, default=36, help="also time the no-op dvc repro with this many experiments (0: skip)"
    )
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = measure(args.repeats, args.quiet_wait, args.keep, args.baseline, log=log)
    if args.zoo:
        results["noop_zoo"] = measure_noop_zoo(args.zoo, args.repeats, log=log)
        write_json("startup", results)
    atomic_write_text(STARTUP_MD, render_markdown(results))
    if args.zoo:
        print(
            f"no-op dvc repro with {args.zoo} experiments ({results['noop_zoo']['stages']} stages): "
            f"{results['noop_zoo']['noop_median_s']:.2f} s"
        )
    noop = ", ".join(
        f"{side} {row['median_s']:.2f} s" for side, row in results["dvc_repro_noop"].items() if side != "rounds"
    )
    print(f"no-op dvc repro: {noop}; python -c pass: {results['python_baseline_s']:.2f} s")
    for stage, rows in results["stages"].items():
        for label, row in rows.items():
            extra = (
                f", fit {row['fit_seconds']:.2f} s, first step {row['first_step_seconds']:.2f} s"
                if "fit_seconds" in row
                else ""
            )
            print(f"{stage:>9} {label:>22}: process {row['process_wall_s']:.2f} s, fixed {row['fixed_s']:.2f} s{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
