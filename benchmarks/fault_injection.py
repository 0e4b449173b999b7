"""Kill a run at random points and resume it: every resumed run must give the rows and the report
of the uninterrupted run, with no row missing or written twice.

python benchmarks/fault_injection.py [--trials 30] [--seed 0] [--work DIR]

Runs a small demo grid (tiny encoder) once uninterrupted, then per trial starts it afresh,
sends SIGKILL after a random delay (anywhere from start-up to the end: during training,
evaluation, the writing of rows and checkpoints), and resumes it with `--resume` until it
finishes. Then, one at a time on copies of the finished run or of a run killed mid-cell: a
corrupt cache entry, a torn last line of results.jsonl, a removed checkpoint. Prints one line
per trial and the count of faults survived.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = [
    *("--dataset", "demo", "--encoder", "tiny", "--freeze-layers", "1", "--max-per-relation", "8"),
    *("--orders", "2", "--method", "cml", "--epochs", "1", "--consolidate-epochs", "1", "--cpus-per-cell", "1"),
]
TIMING = ("seconds", "train_examples_per_second")


def start(args: list[str], cache: Path) -> subprocess.Popen:
    env = {**os.environ, "CML_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_cml.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(args: list[str], cache: Path) -> str:
    """Run to the end; its stderr (warnings) on success."""
    done = start(args, cache)
    _, err = done.communicate()
    if done.returncode != 0:
        raise RuntimeError(f"run_cml.py {' '.join(args)} exited {done.returncode}: {err.strip().splitlines()[-1:]}")
    return err


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    out = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]
    return sorted(out, key=lambda r: (r["method"], r["order"], r["seed"], r["task"]))


def numbers(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    methods = {m: {k: v for k, v in r.items() if k not in TIMING} for m, r in report["methods"].items()}
    config = {k: v for k, v in report["config"].items() if k != "output"}
    return {**report, "methods": methods, "config": config, "timings": None, "wall": None}


def same(run_dir: Path, reference: Path) -> bool:
    """Identical rows (each once) and report numbers."""
    got = rows(run_dir)
    unique = {(r["method"], r["order"], r["seed"], r["task"]) for r in got}
    return len(unique) == len(got) and got == rows(reference) and numbers(run_dir) == numbers(reference)


def kill_trial(work: Path, cache: Path, delay: float) -> tuple[bool, str]:
    """A run killed after `delay` seconds, then resumed to the end."""
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    victim = start([*RUN, "--output", str(run_dir)], cache)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    results = run_dir / "results.jsonl"
    at = f"{len(results.read_text().splitlines()) if results.exists() else 0} rows"
    checkpoints = list((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").exists() else []
    at += f", {len(checkpoints)} checkpoint(s)"
    if not (run_dir / "config.yaml").exists():  # killed before the run directory was set up
        finish([*RUN, "--output", str(run_dir)], cache)
    else:
        finish(["--resume", str(run_dir)], cache)
    return same(run_dir, work / "reference"), at


def damage_trial(work: Path, cache: Path, kind: str) -> tuple[bool, str]:
    """A finished run (or one killed mid-cell) with one thing damaged, then resumed."""
    run_dir = work / kind
    shutil.rmtree(run_dir, ignore_errors=True)
    if kind == "removed checkpoint":
        victim = start([*RUN, "--output", str(run_dir)], cache)
        while not list((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").exists() else True:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        for path in (run_dir / "checkpoints").glob("*.pt"):
            path.unlink()
    else:
        shutil.copytree(work / "reference", run_dir)
        if kind == "torn results line":
            results = run_dir / "results.jsonl"
            results.write_bytes(results.read_bytes()[:-40])
        else:  # corrupt cache entry
            entry = min(cache.glob("tokens-*.pt"))
            entry.write_bytes(entry.read_bytes()[:100])
    err = finish(["--resume", str(run_dir)], cache)
    said = next((line for line in err.splitlines() if line.startswith("warning: ")), "no warning")
    return same(run_dir, work / "reference"), said


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "fault-injection")
    args = p.parse_args()
    work, cache = args.work, args.work / "cache"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.perf_counter()
    reference = start([*RUN, "--output", str(work / "reference")], cache)
    while reference.poll() is None and not (work / "reference" / "config.yaml").exists():
        time.sleep(0.01)
    ready = time.perf_counter() - began  # python, torch and the config: before it, a kill meets no run
    if reference.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed: {reference.stderr.read().strip().splitlines()[-1:]}")
    length = time.perf_counter() - began
    print(f"uninterrupted run: {length:.1f} s, its run directory set up after {ready:.1f} s")
    rng = random.Random(args.seed)
    survived = 0
    for trial in range(args.trials):
        delay = rng.uniform(ready, length)
        ok, at = kill_trial(work, cache, delay)
        survived += ok
        print(f"kill {trial + 1}: SIGKILL after {delay:.1f} s ({at} at the kill): {'identical' if ok else 'DIFFERENT'}")
    print(f"{survived} of {args.trials} killed runs resumed to identical rows and report")
    damaged = 0
    for kind in ("corrupt cache entry", "torn results line", "removed checkpoint"):
        ok, said = damage_trial(work, cache, kind)
        damaged += ok
        print(f"{kind}: {'identical' if ok else 'DIFFERENT'} ({said})")
    print(f"{damaged} of 3 damaged runs resumed to identical rows and report")
    if survived < args.trials or damaged < 3:
        sys.exit(1)


if __name__ == "__main__":
    main()
