"""Command line: flags -> RunConfig -> experiment -> runner. Input errors exit with code 2."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cml.config import CHOICES, LossConfig, RunConfig, load_config
from cml.errors import CMLInputError, DivergedError

# flag destination -> (config section, field); "" is the top level
FLAGS = {
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "orders": ("data", "orders"),
    "order_protocol": ("data", "order_protocol"),
    "eval_split": ("data", "eval_split"),
    "tasks": ("data", "n_tasks"),
    "task_split": ("data", "task_split"),
    "max_per_relation": ("data", "max_per_relation"),
    "encoder": ("encoder", "name"),
    "max_length": ("encoder", "max_length"),
    "freeze_layers": ("encoder", "freeze_layers"),
    "marker_init": ("encoder", "marker_init"),
    "method": ("train", "methods"),
    "epochs": ("train", "epochs"),
    "consolidate_epochs": ("train", "consolidate_epochs"),
    "lr": ("train", "lr"),
    "head_lr": ("train", "head_lr"),
    "projection_lr": ("train", "projection_lr"),
    "classifier": ("train", "classifier"),
    "alpha": ("train", "alpha"),
    "beta": ("train", "beta"),
    "augment": ("train", "augment"),
    "augment_max_length": ("train", "augment_max_length"),
    "batch_size": ("train", "batch_size"),
    "memory_size": ("train", "memory_size"),
    "head": ("train", "head"),
    "precision": ("train", "precision"),
    "curriculum_order": ("data", "curriculum_orders"),
    "types": ("cml", "types"),
    "n_types": ("cml", "n_types"),
    "similarity": ("cml", "similarity"),
    "pacing": ("cml", "pacing"),
    "start_fraction": ("cml", "start_fraction"),
    "direction": ("cml", "direction"),
    "meta_eps": ("cml", "meta_eps"),
    "meta_schedule": ("cml", "meta_schedule"),
    "difficulty": ("cml", "difficulty"),
    "nas_method": ("search", "method"),
    "relaxation": ("search", "relaxation"),
    "search_task": ("search", "task"),
    "search_steps": ("search", "steps"),
    "skip_limit": ("search", "skip_limit"),
    "output": ("", "output"),
    "seed": ("", "seed"),
    "seeds": ("", "seeds"),
    "device": ("", "device"),
    "executor": ("executor", "name"),
    "ray_address": ("executor", "ray_address"),
    "cpus_per_cell": ("executor", "cpus_per_cell"),
    "gpus_per_cell": ("executor", "gpus_per_cell"),
    # every loss weight and constant: --loss-<field>
    **{f"loss_{f.name}": ("loss", f.name) for f in dataclasses.fields(LossConfig)},
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_cml.py", description="Continual relation extraction with curriculum-meta learning."
    )
    p.add_argument("--config", help="YAML config file; flags given here override it")
    p.add_argument(
        "--dataset",
        help="demo, fewrel, tacred, hf:ID[:SPLITS] (Hugging Face, FewRel-shaped), or a path: FewRel-format JSON "
        "(file, pre-split or raw directory), RP-CRE / CRL's data_with_marker*.json, or CEAR's data directory",
    )
    p.add_argument("--data-dir", help="directory of the dataset's files (default $CML_DATA_DIR, else data/<dataset>)")
    p.add_argument("--orders", type=int, help="number of task orders (default 5)")
    p.add_argument(
        "--tasks", type=int, help="number of tasks (default: the dataset's task_orders.json, else 10; demo 5)"
    )
    p.add_argument(
        "--order-protocol",
        choices=CHOICES["order_protocol"],
        help="where orders come from: file (task_orders.json), random (seeds 2021 + 100 i) or cyclic (shifts of "
        "one random split, as the CML paper); default: file when the dataset has one, else random",
    )
    p.add_argument(
        "--eval-split",
        choices=CHOICES["eval_split"],
        help="split the results are measured on: test (default), or val to choose settings",
    )
    p.add_argument("--task-split", choices=CHOICES["task_split"], help="how relations are cut into tasks")
    p.add_argument("--max-per-relation", type=int, help="cap on training examples per relation, for quick runs")
    p.add_argument("--encoder", help="minilm (offline default), tiny (random, for tests), a local path or a hub id")
    p.add_argument("--max-length", type=int, help="maximum word pieces per sentence (default 128)")
    p.add_argument(
        "--method", type=lambda s: [m.strip() for m in s.split(",") if m.strip()], help="comma list of methods"
    )
    p.add_argument("--epochs", type=int, help="epochs of the learn stage (default 2)")
    p.add_argument("--consolidate-epochs", type=int, help="epochs of the consolidation stage (default 10)")
    p.add_argument("--lr", type=float, help="learning rate of the encoder (default 5e-5)")
    p.add_argument("--projection-lr", type=float, help="learning rate of the h and z projections (default: --lr)")
    p.add_argument("--head-lr", type=float, help="learning rate of the classifier (default 1e-3)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--memory-size", type=int, help="memory examples per relation (default 10)")
    p.add_argument(
        "--head", help="projection (default: Linear-GELU-LayerNorm), linear, mlp, or a genotype.json of --search-head"
    )
    p.add_argument(
        "--classifier",
        choices=CHOICES["classifier"],
        help="test-time classifier for every method: linear, ncm (nearest prototype), ensemble; auto (default): "
        "each method's own",
    )
    p.add_argument("--alpha", type=float, help="ensemble weight of the linear head (default 0.5)")
    p.add_argument("--beta", type=float, help="prototype weight of the dynamic (memory) mean (default 0.5)")
    p.add_argument(
        "--augment",
        choices=CHOICES["augment"],
        help="memory augmentation of cear and cml: none, swap (entity swap) or full (swap + concatenation, default)",
    )
    p.add_argument("--augment-max-length", type=int, help="word pieces of a concatenated sentence at most (default 256)")
    p.add_argument("--marker-init", choices=CHOICES["marker_init"], help="entity-marker embeddings: punct (default) or random")
    p.add_argument(
        "--curriculum-order",
        action="store_true",
        default=None,
        help="also run order 0's tasks sorted by difficulty, easy to hard and hard to easy",
    )
    p.add_argument("--types", help="entity types: auto, dataset, induced, or a KG type map (JSON: entity id -> types)")
    p.add_argument("--n-types", type=int, help="clusters for induced types (default 32)")
    p.add_argument("--similarity", choices=CHOICES["similarity"], help="relation similarity (default kl)")
    p.add_argument("--pacing", choices=CHOICES["pacing"], help="curriculum pacing (default linear)")
    p.add_argument("--start-fraction", type=float, help="fraction of the memory available at the first step")
    p.add_argument("--direction", choices=CHOICES["direction"], help="curriculum direction")
    p.add_argument("--meta-eps", type=float, help="Reptile step size (default: the method's own, 0.5 for cml-2021 as published, 0.9 for cml)")
    p.add_argument("--meta-schedule", choices=CHOICES["meta_schedule"], help="Reptile step-size schedule")
    p.add_argument(
        "--difficulty", choices=CHOICES["difficulty"], help="what orders the curriculum: types (default) or prototypes"
    )
    for f in dataclasses.fields(LossConfig):
        p.add_argument(f"--loss-{f.name.replace('_', '-')}", type=int if f.type == "int" else float, help=f"{f.metadata['help']} (default {f.default})")
    p.add_argument(
        "--search-head",
        action="store_true",
        help="search the head cell (DARTS) on one task's frozen features; writes genotype.json and a search report",
    )
    p.add_argument(
        "--nas-method", choices=CHOICES["nas_method"], help="hypergradient of the head search (default darts2)"
    )
    p.add_argument(
        "--relaxation", choices=CHOICES["relaxation"], help="relaxation of the head search (default softmax)"
    )
    p.add_argument("--search-task", type=int, help="which task of order 0 the head search uses (default 0)")
    p.add_argument("--search-steps", type=int, help="architecture steps of the head search (default 300)")
    p.add_argument("--skip-limit", type=int, help="stop the head search once the cell keeps this many skip edges")
    p.add_argument("--output", help="run directory (default runs/latest)")
    p.add_argument("--seed", type=int, help="seed of the run (default 2021)")
    p.add_argument(
        "--seeds",
        type=int,
        help="runs of every (method, order) with seeds --seed, --seed + 1, ...: the report separates the variance "
        "of orders from that of seeds (default 1)",
    )
    p.add_argument("--device", choices=CHOICES["device"])
    p.add_argument(
        "--precision",
        choices=CHOICES["precision"],
        help="bf16 autocast or fp32; auto (default): bf16 where the GPU or CPU multiplies bf16 natively",
    )
    p.add_argument(
        "--executor",
        choices=CHOICES["executor"],
        help="where the (method, order, seed) cells run: local (default; this process, one after another) or ray "
        '(a Ray task each, side by side; pip install -e ".[ray]")',
    )
    p.add_argument(
        "--ray-address",
        help="ray: the cluster to join (auto, or host:port); default: start Ray on this machine",
    )
    p.add_argument(
        "--cpus-per-cell",
        type=int,
        help="threads of one cell, and the CPUs Ray reserves for it (default: all cores locally, 1 on ray); on a "
        "CPU the numbers depend on it, so equal values give equal rows on either executor",
    )
    p.add_argument(
        "--gpus-per-cell",
        type=float,
        help="ray: GPUs one cell holds; a fraction lets cells share a GPU (e.g. 0.25: four cells per GPU)",
    )
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR from its last finished task")
    p.add_argument("--freeze-layers", type=int, help="freeze the embeddings and this many bottom encoder layers")
    p.add_argument("--plan-only", action="store_true", help="load the data, print the task plan and stop")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The config file (for --resume: the run's own config.yaml unless --config is given), then the flags."""
    overrides: dict[str, dict] = {}
    for dest, (section, key) in FLAGS.items():
        overrides.setdefault(section, {})[key] = getattr(args, dest)
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
    from cml.nas.run import prepare_search_dir, run_search

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
