"""`run_cml.py --search-head`, the program around the head-search library (cml/nas/): features of
one task under the frozen encoder -> DARTS search -> genotype.json -> the searched cell against
the linear and MLP heads on that task -> search report (JSON, Markdown, plots)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cml.cache import cache_dir, fingerprint, memo
from cml.config import RunConfig
from cml.encoder import RelationEncoder, load_backbone, load_tokenizer
from cml.errors import CMLInputError
from cml.experiment import Experiment
from cml.model import make_head
from cml.nas.search import Features, SearchResult, search, train_head
from cml.report import table
from cml.runner import check_writable
from cml.tokens import tokenize

GENOTYPE_FILE, REPORT_FILE = "genotype.json", "search.json"
SUPERNET_FIGURES = (("as_trained", ""), ("noise_free", "_noise_free"), ("discretised", "_discretised"))


def prepare_search_dir(config: RunConfig) -> Path:
    """Refuse, before any work, search options the method does not use, and an output that holds
    a search already or cannot be written."""
    run_dir = check_writable(Path(config.output))
    problem = config.search.problem()  # here, not in RunConfig.check: a learner run reads no search option
    if problem:
        raise CMLInputError(problem)
    if (run_dir / REPORT_FILE).exists():
        raise CMLInputError(f"holds a head search already ({REPORT_FILE}); pick another --output", run_dir)
    return run_dir


def run_search(config: RunConfig, experiment: Experiment, device: torch.device, progress: bool = True) -> dict:
    run_dir = prepare_search_dir(config)
    tasks = experiment.orders[0].tasks
    if not 0 <= config.search.task < len(tasks):
        raise CMLInputError(f"search.task is {config.search.task}; order 0 has tasks 0..{len(tasks) - 1}")
    relations = tasks[config.search.task]
    data = task_features(config, relations, experiment.dataset, device)
    result = search(data, config.search, config.seed, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    result.genotype.save(run_dir / GENOTYPE_FILE)

    in_dim, width = data["train"].x.shape[1], data["train"].x.shape[1] // 2
    heads = {
        "linear": make_head("linear", in_dim, width),
        "mlp": make_head("mlp", in_dim, width),
        "searched cell": make_head(str(run_dir / GENOTYPE_FILE), in_dim, width),
    }
    comparison = {name: train_head(head, data, config.search.head_epochs, config.seed) for name, head in heads.items()}
    report = {
        "dataset": experiment.dataset.name,
        "task": config.search.task,
        "relations": relations,
        "examples": {name: len(f.y) for name, f in data.items()},
        "config": config.to_dict(),
        "genotype": result.genotype.to_dict(),
        "op_histogram": result.genotype.histogram(),
        "stopped_early": result.stopped_early,
        "search_seconds": round(result.seconds, 1),
        "supernet": {
            key: result.history[-1][f"val_accuracy{suffix}"]
            for key, suffix in SUPERNET_FIGURES
            if f"val_accuracy{suffix}" in result.history[-1]
        },
        "discretisation_gap": round(result.discretisation_gap, 5),
        "history": result.history,
        "alpha": _alpha_table(result),
        "heads": comparison,
    }
    (run_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    plots = config.plots == "png"
    (run_dir / "search.md").write_text(markdown(report, plots))
    if plots:
        plot(report, run_dir)
    return report


def task_features(config: RunConfig, relations: list[str], dataset, device: torch.device) -> dict[str, Features]:
    """Entity states of the task's train / val / test examples under the whole encoder, frozen;
    computed once and cached on disk (keyed by encoder, length limit, seed and examples)."""
    label_of = {r: i for i, r in enumerate(relations)}
    tokenizer = load_tokenizer(config.encoder.name)
    encoder: list[RelationEncoder] = []  # loaded on the first cache miss only

    def encode(examples: list) -> dict[str, torch.Tensor]:
        if not encoder:
            backbone = load_backbone(config.encoder.name, tokenizer, config.seed, config.encoder.marker_init)
            encoder.append(RelationEncoder(backbone).to(device).eval())
        split = tokenize(tokenizer, examples, label_of, config.encoder.max_length)
        with torch.no_grad():
            x = split.map(
                torch.arange(len(split)),
                lambda b: encoder[0](**{k: v.to(device) for k, v in b.items()}).float().cpu(),
                128,
                tokenizer.pad_token_id or 0,
            )
        return {"x": x, "y": split.labels}

    out = {}
    for name in ("train", "val", "test"):
        examples = [ex for ex in getattr(dataset, name) if ex.relation in label_of]
        if not examples:
            raise CMLInputError(f"the search task has no {name} examples (relations {', '.join(relations)})")
        key = fingerprint(
            config.encoder.name,
            config.encoder.marker_init,
            config.encoder.max_length,
            config.seed,
            examples,
            sorted(label_of.items()),
        )
        out[name] = Features(**memo(cache_dir() / f"features-{key}.pt", lambda ex=examples: encode(ex)))
    return out


def _alpha_table(result: SearchResult) -> dict:
    return {
        "title": result.table,
        "ops": list(result.ops),
        "edges": {
            f"{i}->{j}": [round(float(p), 4) for p in row] for (i, j), row in zip(result.edges, result.probabilities)
        },
    }


def markdown(report: dict, plots: bool = True) -> str:
    """The search report as Markdown; `plots`: link the two PNG plots drawn beside it."""
    s, n = report["config"]["search"], report["examples"]
    how = f"{s['sampling']} sampling" if s["method"] == "spos" else f"{s['relaxation']} relaxation"
    lines = [
        f"# Head-cell search: {report['dataset']}, task {report['task']} of order 0",
        "",
        (
            f"{s['method']} with {how}, {report['history'][-1]['step']} steps"
            f"{' (stopped early)' if report['stopped_early'] else ''}, "
            f"{report['search_seconds']} s on frozen {report['config']['encoder']['name']} features ({n['train']} train / "
            f"{n['val']} val / {n['test']} test)."
        ),
        "",
        "## Genotype",
        "",
    ]
    for node in report["genotype"]["nodes"]:
        lines.append(f"- node {node['node']}: " + ", ".join(f"{e['op']}(node {e['from']})" for e in node["edges"]))
    lines += ["", "Op histogram: " + ", ".join(f"{op} {n}" for op, n in sorted(report["op_histogram"].items())), ""]
    supernet = report["supernet"]
    noise_free = (
        f"{100 * supernet['noise_free']:.1f} without the relaxation's noise, " if "noise_free" in supernet else ""
    )
    lines += [
        (
            f"Supernet at the end, validation accuracy: {100 * supernet['as_trained']:.1f} as trained, {noise_free}"
            f"{100 * supernet['discretised']:.1f} cut to the genotype with its weights "
            f"(discretisation gap {100 * report['discretisation_gap']:+.1f} points)."
        ),
        "",
    ]
    rows = [
        [name, f"{h['parameters']:,}", f"{100 * h['val_accuracy']:.1f}", f"{100 * h['test_accuracy']:.1f}"]
        for name, h in report["heads"].items()
    ]
    lines += [
        "## Heads trained from scratch on the task",
        "",
        *table(["head", "parameters", "val acc", "test acc"], rows),
    ]
    if plots:
        lines += ["", "![alpha](alpha_heatmap.png)", "", "![search](search_accuracy.png)", ""]
    return "\n".join(lines)


def plot(report: dict, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    alpha = report["alpha"]
    table = np.array(list(alpha["edges"].values()))
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(alpha["ops"]), 1.0 + 0.35 * len(table)))
    image = ax.imshow(table, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(alpha["ops"])), alpha["ops"], rotation=45, ha="right")
    ax.set_yticks(range(len(table)), list(alpha["edges"]))
    ax.set_xlabel("op")
    ax.set_ylabel("edge")
    ax.set_title(alpha["title"])
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(run_dir / "alpha_heatmap.png", dpi=120)
    plt.close(fig)

    steps = [h["step"] for h in report["history"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (
        ("val_accuracy", "supernet as trained"),
        ("val_accuracy_noise_free", "supernet without noise"),
        ("val_accuracy_discretised", "cut to the genotype"),
    ):
        if key in report["history"][-1]:
            ax.plot(steps, [h[key] for h in report["history"]], marker="o", label=label)
    ax.set_xlabel("search step")
    ax.set_ylabel("val accuracy")
    skips = ax.twinx()
    skips.step(steps, [h["skip_edges"] for h in report["history"]], color="tab:red", where="post", label="skip edges")
    skips.set_ylabel("skip edges in the discretised cell")
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(run_dir / "search_accuracy.png", dpi=120)
    plt.close(fig)
