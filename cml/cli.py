"""Command line: flags -> RunConfig -> experiment -> runner. Input errors exit with code 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cml.config import Option, RunConfig, load_config, options
from cml.errors import CMLInputError, DivergedError


def _help(opt: Option) -> str:
    shown = ",".join(opt.default) if isinstance(opt.default, list) else opt.default
    return opt.help if shown in (None, False) else f"{opt.help} (default {shown})"


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
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR from its last finished task")
    p.add_argument("--plan-only", action="store_true", help="load the data, print the task plan and stop")
    p.add_argument(
        "--search-head",
        action="store_true",
        help="search the head cell (DARTS) on one task's frozen features; writes genotype.json and a search report",
    )
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The config file (for --resume: the run's own config.yaml unless --config is given), then the flags."""
    overrides: dict[str, dict] = {}
    for opt in options():
        overrides.setdefault(opt.section, {})[opt.name] = getattr(args, opt.key)
    base = args.config
    if args.resume:
        overrides[""]["output"] = args.resume
        base = base or Path(args.resume) / "config.yaml"
        if not Path(base).exists():
            raise CMLInputError("no config.yaml: not a run directory to resume", args.resume)
    return load_config(base, overrides)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from cml.experiment import build_experiment
        from cml.report import pm
        from cml.runner import prepare_run_dir, run

        config = config_from_args(args)
        if args.search_head:
            return search_head(config)
        if not args.plan_only:
            prepare_run_dir(config, resume=bool(args.resume))  # fail before any data is loaded
        experiment = build_experiment(config)
        print(experiment.plan())
        if args.plan_only:
            return 0
        report = run(config, experiment, resume=bool(args.resume))
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
