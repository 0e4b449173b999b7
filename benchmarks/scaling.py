"""How a run's cost grows with the stream: one order of a method with the dataset cut into 5, 10,
20 and 40 tasks, evaluating after every task and only after the last, with the wall time and the
peak resident memory of every task against its index.

Takes run_cml.py's flags (the config, data, method; one method) plus `--task-counts` and writes
`scaling.json`, `scaling.md` (one row per run: total time, evaluation share, peak memory) and
`scaling.png` (seconds and peak memory per task against the task index) to `--output`. Each
run is saved as it ends; the same command again skips the runs already in `scaling.json`.

python benchmarks/scaling.py --config configs/fewrel.yaml --data-dir ../shared/data/fewrel \\
    --method cml --task-counts 5,10,20,40 --output runs/scaling
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _machine import header

from cml.cells import task_seed
from cml.cli import config_from_args, parser
from cml.engine import Engine
from cml.experiment import build_experiment
from cml.methods import METHODS
from cml.runner import build_learner, resolved
from cml.timing import EVALUATION_PHASE, PhaseTimer


def peak_rss_since_reset() -> float:
    """GiB: the process's peak resident set since the last `reset_peak_rss` (Linux's VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set


def one_run(config, n_tasks: int, eval_every: int) -> dict:
    """One order of the config's method over `n_tasks` tasks, seeded as a run of it is; seconds,
    evaluation seconds and peak memory per task."""
    config.data.n_tasks, config.data.orders, config.data.order_protocol = n_tasks, 1, "random"
    config.train.eval_every = eval_every
    config, device = resolved(config)
    experiment = build_experiment(config)
    model, data, context = build_learner(config, experiment, device)
    model.reset_new_layers(config.seed)
    timer = PhaseTimer(sync=True)
    (method,) = config.train.methods
    engine = Engine(model, data, config, METHODS[method], context, device, False, timer)
    tasks, rows = experiment.orders[0].tasks, []
    for k, task in enumerate(tasks):
        reset_peak_rss()
        engine.seed = task_seed(config.seed, method, 0, k)  # the seeds a run of this order takes
        torch.manual_seed(engine.seed)
        evaluation, began = timer.seconds[EVALUATION_PHASE], time.perf_counter()
        result = engine.run_task(task)
        rows.append(
            {
                "task": k,
                "seen_relations": len(engine.seen_relations),
                "seconds": time.perf_counter() - began,
                "evaluation_seconds": timer.seconds[EVALUATION_PHASE] - evaluation,
                "peak_gib": peak_rss_since_reset(),
                "whole_accuracy": None if not result.evaluated else result.whole_accuracy,
            }
        )
        print(f"  {n_tasks} tasks, eval every {eval_every}: task {k + 1}: {rows[-1]['seconds']:.1f} s", flush=True)
    return {"tasks": n_tasks, "eval_every": eval_every, "rows": rows, "phases": dict(timer.seconds)}


def table(runs: list[dict]) -> str:
    lines = [
        "| tasks | evaluated | total (s) | of which evaluation | last task (s) | peak memory (GiB) | final W |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rows = r["rows"]
        total, evaluation = sum(x["seconds"] for x in rows), sum(x["evaluation_seconds"] for x in rows)
        when = "every task" if r["eval_every"] == 1 else "last task"
        lines.append(
            f"| {r['tasks']} | {when} | {total:.0f} | {evaluation:.1f} ({100 * evaluation / total:.0f}%) | "
            f"{rows[-1]['seconds']:.1f} | {max(x['peak_gib'] for x in rows):.2f} | "
            f"{100 * rows[-1]['whole_accuracy']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        index = [x["task"] + 1 for x in r["rows"]]
        style = "-" if r["eval_every"] == 1 else "--"
        label = f"{r['tasks']} tasks, {'every task' if r['eval_every'] == 1 else 'last task'} evaluated"
        (line,) = time_ax.plot(index, [x["seconds"] for x in r["rows"]], style, marker=".", label=label)
        memory_ax.plot(index, [x["peak_gib"] for x in r["rows"]], style, marker=".", color=line.get_color())
    time_ax.set(xlabel="task index", ylabel="seconds", title="Wall time per task", xscale="log")
    memory_ax.set(xlabel="task index", ylabel="GiB", title="Peak resident memory per task", xscale="log")
    time_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str]) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--task-counts", default="5,10,20,40", help="comma list of stream lengths")
    mine, rest = own.parse_known_args(argv)
    config, _ = config_from_args(parser().parse_args(rest))
    if len(config.train.methods) != 1:
        sys.exit("benchmarks/scaling.py: give one --method")
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "scaling.json"
    runs = json.loads(saved.read_text()) if saved.exists() else []  # run again, it goes on where it stopped
    done = {(r["tasks"], r["eval_every"]) for r in runs}
    for n_tasks in map(int, mine.task_counts.split(",")):
        for eval_every in (1, n_tasks):
            if (n_tasks, eval_every) not in done:
                runs.append(one_run(config, n_tasks, eval_every))
                saved.write_text(json.dumps(runs, indent=1))  # kept as each run ends
    (out / "scaling.md").write_text(table(runs))
    plot(runs, out / "scaling.png")
    print(table(runs))


if __name__ == "__main__":
    header()
    main(sys.argv[1:])
