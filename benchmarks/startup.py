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
from pathlib import Path
from typing import Any

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


def measure(
    repeats: int = 5, quiet_wait: float = 60.0, keep: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the start-up benchmark; returns the results (also written to ``benchmarks/out/startup.json``).

    Args:
        repeats: no-op ``dvc repro`` runs, and clean rounds of the per-stage measurements.
        quiet_wait: seconds to wait for a quiet machine before each round (0: never wait).
        keep: keep the temporary repo (its path is in the results).
        log: where progress lines go.
    """
    env = stage_env()
    python, dvc = str(BIN / "python"), str(BIN / "dvc")
    policy = Policy(repeats, 2 * repeats, quiet_wait, log)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "git_commit": git_commit(),
        "repeats": repeats,
    }
    with temporary_dir("deepnotes-startup-", keep=keep) as tmp:
        repo = make_tiny_repo(tmp / "repo", env=env)
        results["repo"] = str(repo) if keep else "(temporary, removed)"
        log(f"tiny repo: {repo}")

        # 1. dvc repro: cold once, then no-op.
        cold = timed(lambda: run([dvc, "repro"], repo, env))
        stages_run = re.findall(r"Running stage '([^']+)'", cold["stdout"])
        results["dvc_repro_cold"] = {
            "seconds": round(cold["seconds"], 2),
            "stages_run": len(stages_run),
            "foreign_cores": round(cold["foreign_cores"], 2),
        }
        log(f"cold dvc repro: {cold['seconds']:.1f} s, {len(stages_run)} stages")

        def noop_round(r: int) -> dict[str, dict[str, Any]]:
            result = timed(lambda: run([dvc, "repro"], repo, env))
            if "Running stage" in result["stdout"]:
                raise RuntimeError(f"the second dvc repro was not a no-op:\n{result['stdout'][-2000:]}")
            return {"noop": result}

        rounds, info = collect_rounds(noop_round, policy, "no-op dvc repro")
        noop = [r["noop"]["seconds"] for r in rounds]
        results["dvc_repro_noop"] = {
            "median_s": round(median(noop), 3),
            "seconds": [round(s, 3) for s in noop],
            "rounds": info,
        }

        # 2. Interpreter, module import and whole stage process, in rounds.
        commands: dict[str, list[str]] = {"python -c pass": [python, "-c", "pass"]}
        for stage in STAGES:
            commands[f"import pipelines.stages.{stage}"] = [python, "-c", f"import pipelines.stages.{stage}"]
        for stage, args in STAGES.items():
            commands[f"stage {stage}"] = [python, "-m", f"pipelines.stages.{stage}", *args]
        train_json = repo / "metrics" / "train" / f"{STAGES['train'][0]}.json"

        def stage_round(r: int) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for name, cmd in commands.items():
                out[name] = timed(lambda cmd=cmd: run(cmd, repo, env))
                if name == "stage train":
                    summary = json.loads(train_json.read_text())
                    out[name]["first_step_seconds"] = summary["first_step_seconds"]
                    out[name]["fit_seconds"] = summary["fit_seconds"]
            return out

        rounds, info = collect_rounds(stage_round, policy, "stage start-up")
        per_command = {name: [r[name]["seconds"] for r in rounds] for name in commands}
        baseline = median(per_command["python -c pass"])
        stages: dict[str, Any] = {}
        for stage, args in STAGES.items():
            imp, proc = per_command[f"import pipelines.stages.{stage}"], per_command[f"stage {stage}"]
            stages[stage] = {
                "command": f"python -m pipelines.stages.{stage} {' '.join(args)}",
                "process_wall_s": round(median(proc), 3),
                "process_wall_all": [round(s, 3) for s in proc],
                "module_import_wall_s": round(median(imp), 3),
                "module_import_s": round(median(imp) - baseline, 3),
            }
        firsts = [r["stage train"]["first_step_seconds"] for r in rounds]
        fits = [r["stage train"]["fit_seconds"] for r in rounds]
        stages["train"] |= {
            "first_step_seconds": round(median(firsts), 3),
            "first_step_all": firsts,
            "fit_seconds": round(median(fits), 3),
        }
        results["python_baseline_s"] = round(baseline, 3)
        results["stages"] = stages
        results["stage_rounds"] = info

        # 3. Import time inside each real stage run.
        for stage, args in STAGES.items():
            out = run([python, "-X", "importtime", "-m", f"pipelines.stages.{stage}", *args], repo, env)
            stages[stage]["imports_in_run"] = parse_importtime(out["stderr"])
            atomic_write_text(OUT_DIR / f"importtime_{stage}.txt", out["stderr"])
            log(
                f"{stage}: imports during the run {stages[stage]['imports_in_run']['total_s']:.2f} s, "
                f"process {stages[stage]['process_wall_s']:.2f} s"
            )
    results["recorded_default_runs"] = recorded_default_runs()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    write_json("startup", results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: measure and print a summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="no-op repros and clean rounds per stage (default 5)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for a quiet machine before each round (default 60; 0: never)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary repo")
    args = parser.parse_args(argv)
    results = measure(
        args.repeats, args.quiet_wait, args.keep, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    print(
        f"no-op dvc repro: {results['dvc_repro_noop']['median_s']:.2f} s; python -c pass: "
        f"{results['python_baseline_s']:.2f} s"
    )
    for stage, row in results["stages"].items():
        extra = f", first step {row['first_step_seconds']:.2f} s" if "first_step_seconds" in row else ""
        print(
            f"{stage:>9}: process {row['process_wall_s']:.2f} s, module import {row['module_import_s']:.2f} s, "
            f"imports during the run {row['imports_in_run']['total_s']:.2f} s{extra}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
