"""Command line: flags -> RunConfig -> experiment -> runner. Input errors exit with code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cml.config import DataConfig, Option, RunConfig, load_config, options
from cml.errors import CMLInputError, DivergedError


def _help(opt: Option) -> str:
    shown = ",".join(opt.default) if isinstance(opt.default, list) else opt.default
    said = [opt.domain.words()] if opt.domain else []
    said += [] if shown in (None, False) else [f"default {shown}"]
    return f"{opt.help} ({'; '.join(said)})" if said else opt.help


PARSE = {int: int, float: float, str: str, list: lambda s: [m.strip() for m in s.split(",") if m.strip()]}


def parser() -> argparse.ArgumentParser:
    """Every option of cml/config.py as a flag, plus the flags that are not options."""
    p = argparse.ArgumentParser(
        prog="run_cml.py", description="Continual relation extraction with curriculum-meta learning."
    )
    p.add_argument("--config", help="YAML config file; flags given here override it")
    for opt in options():
        if opt.kind is bool:
            p.add_argument(opt.flag, dest=opt.key, action="store_true", default=None, help=_help(opt))
        else:
            p.add_argument(opt.flag, dest=opt.key, type=PARSE[opt.kind], choices=opt.choices, help=_help(opt))
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its last finished task; --seeds, --orders and --method may add cells to it",
    )
    p.add_argument("--plan-only", action="store_true", help="load the data, print the task plan and stop")
    p.add_argument(
        "--search-head",
        action="store_true",
        help="search the head cell (DARTS) on one task's frozen features; writes genotype.json and a search report",
    )
    return p


ROOT = Path(__file__).resolve().parents[1]  # the project
SHIPPED = ROOT / "configs"


def shipped_config(dataset: str, device: str) -> tuple[Path | None, str]:
    """The config a dataset named without --config starts from: the file shipped for it
    (configs/NAME.yaml, its budget for a CPU), or on a GPU its literature protocol
    (configs/NAME-paper.yaml) where one is shipped; and why, for the plan."""
    from cml.device import resolve_device

    cpu, gpu = SHIPPED / f"{dataset}.yaml", SHIPPED / f"{dataset}-paper.yaml"
    if resolve_device(device).type == "cuda" and gpu.exists():
        return gpu, f"the literature protocol shipped for --dataset {dataset}, on this GPU"
    if cpu.exists():
        why = f"the budget shipped for --dataset {dataset} on a CPU"
        return cpu, why + (f" ({gpu.name} is the literature protocol, for a GPU)" if gpu.exists() else "")
    return None, f"no config is shipped for --dataset {dataset}: the built-in defaults"


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, str]:
    """The config file, then the flags; and where the settings came from, for the plan. The file
    is --config; for --resume, the run's own config.yaml; for a dataset named with neither, the
    file shipped for it (`shipped_config`). The default dataset (demo) keeps the built-in
    defaults, so that `--dataset demo` runs what no flag at all runs."""
    overrides: dict[str, dict] = {}
    for opt in options():
        overrides.setdefault(opt.section, {})[opt.name] = getattr(args, opt.key)
    base, origin = args.config, f"{args.config}, then the flags given" if args.config else "the built-in defaults"
    if args.resume:
        overrides[""]["output"] = args.resume
        base = base or Path(args.resume) / "config.yaml"
        origin = f"{base} (the run's own), then the flags given"
        if not Path(base).exists():
            raise CMLInputError("no config.yaml: not a run directory to resume", args.resume)
    elif base is None and getattr(args, "data.dataset") not in (None, DataConfig().dataset):
        base, why = shipped_config(getattr(args, "data.dataset"), args.device or "auto")
        origin = f"{_shown(base)}: {why}, then the flags given" if base else why
    return load_config(base, overrides), origin


def _shown(path: Path) -> str:
    """A shipped file as the project names it (configs/...), else its full path."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_cml.py report",
        description="One report over runs made separately, as one command with all their methods would give.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (each with config.yaml, results.jsonl)")
    p.add_argument("--output", required=True, help="where the merged run and its report go")
    return p


def report_main(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    try:
        from cml.merge import merge_runs
        from cml.report import pm

        report = merge_runs([Path(d) for d in args.runs], Path(args.output))
    except CMLInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {Path(args.output) / 'report.md'}")
    for name, m in report["methods"].items():
        print(f"  {name}: final whole accuracy {pm(m['final_whole_accuracy'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        from cml.experiment import build_experiment
        from cml.report import pm
        from cml.runner import plan_estimate, prepare_run_dir, run

        config, origin = config_from_args(args)
        if args.search_head:
            return search_head(config)
        # fail before any data is loaded; a plan refuses what its run would (it writes nothing either)
        prepare_run_dir(config, resume=bool(args.resume))
        experiment = build_experiment(config)
        print(f"settings: {origin}")
        print(f"methods: {', '.join(config.train.methods)}; {config.seeds} seed(s); encoder {config.encoder.name}")
        print(experiment.plan())
        if args.plan_only:
            print(plan_estimate(config, experiment).describe())
            return 0
        report = run(config, experiment, resume=bool(args.resume), origin=origin)
        print(f"report: {Path(config.output) / 'report.md'}")
        for name, m in report["methods"].items():
            print(f"  {name}: final whole accuracy {pm(m['final_whole_accuracy'])}")
    except CMLInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def search_head(config: RunConfig) -> int:
    from cml.device import resolve_device
    from cml.experiment import build_experiment
    from cml.head_search import prepare_search_dir, run_search

    prepare_search_dir(config)
    report = run_search(config, build_experiment(config), resolve_device(config.device))
    out = Path(config.output)
    print(f"genotype: {out / 'genotype.json'} ({report['search_seconds']} s of search)")
    for name, head in report["heads"].items():
        print(f"  {name}: test accuracy {100 * head['test_accuracy']:.1f} ({head['parameters']:,} parameters)")
    print(f"report: {out / 'search.md'}")
    return 0


def main_exit() -> None:
    """Console-script entry (`cml ...`), the same as `python run_cml.py ...`."""
    sys.exit(main())
