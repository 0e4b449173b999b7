"""End-to-end throughput of a CRE run against the ceiling of the encoder that runs it.

Runs `run_cml.py` with the flags given (the same flags), then measures, in the same process and
precision, the two ceilings on the run's own sentences: forward + backward of the layers that
train at the training batch size, and forward alone at the evaluation batch size, each over
batches of the whole split sorted by length, picked evenly across it (the lengths of the
split, the least padding any batching gets). Every phase of the run gets its seconds, its share of the wall time and,
where it runs the encoder, its examples/s and their share of the matching ceiling. The end-to-end
figure counts all the encoder work the run must do (training examples at the first ceiling,
forward-only examples: evaluation, memory encoding, teacher and bank passes, at the second) and
divides the time that work would take at the ceilings by the wall time. Peak memory last.

python benchmarks/run_throughput.py --config configs/fewrel.yaml --data-dir ../shared/data/fewrel \
    --orders 1 --method cml --executor local --output runs/throughput-cml
"""

import sys
import time

from _machine import forward_backward_rate, forward_rate, header, peak_memory, spread_batches

from cml.cli import config_from_args, parser
from cml.device import eval_batch_size
from cml.experiment import build_experiment
from cml.report import pm
from cml.runner import build_learner, resolved, run
from cml.timing import FORWARD_PHASES, TRAIN_PHASE, PhaseTimer

header()
args = parser().parse_args(sys.argv[1:])
config, _ = config_from_args(args)
if config.executor.name != "local":  # one cell after another in this process, which times the phases
    print(
        f"error: the phases are timed in this process: add --executor local (not {config.executor.name})",
        file=sys.stderr,
    )
    sys.exit(2)
start = time.perf_counter()
experiment = build_experiment(config)
timer = PhaseTimer(sync=True)
report = run(config, experiment, resume=bool(args.resume), timer=timer)
wall = time.perf_counter() - start

config, device = resolved(config)
model, data, _ = build_learner(config, experiment, device)
eval_batch = eval_batch_size(config.train.eval_batch_size, device)
ceiling, padding = forward_backward_rate(
    model,
    data.train,
    spread_batches(data.train.lengths, config.train.batch_size, 40),
    config.train.batch_size,
    data.pad_id,
    device,
    config.train.precision,
)
forward_ceiling = forward_rate(
    model,
    data.evaluation,
    spread_batches(data.evaluation.lengths, eval_batch, 8),
    eval_batch,
    data.pad_id,
    device,
    config.train.precision,
)
ceilings = {TRAIN_PHASE: ceiling, **dict.fromkeys(FORWARD_PHASES, forward_ceiling)}

trained = timer.examples[TRAIN_PHASE]
forward = sum(timer.examples[p] for p in FORWARD_PHASES)
ideal = trained / ceiling + forward / forward_ceiling
print(
    f"\ndevice {device}, precision {config.train.precision}, batch {config.train.batch_size}, evaluation batch {eval_batch}"
)
for name, m in report["methods"].items():
    print(f"{name}: final whole accuracy {pm(m['final_whole_accuracy'])}")
print(f"wall time (experiment + run): {wall / 60:.1f} min")
print(f"encoder work: {trained:,} training examples, {forward:,} forward-only examples")
print(
    f"ceilings: forward+backward {ceiling:,.1f} examples/s ({100 * padding:.1f}% padding), forward {forward_ceiling:,.1f} examples/s"
)
print(
    f"end to end: the work takes {ideal:.0f} s at the ceilings, {wall:.0f} s here: {100 * ideal / wall:.0f}% of the ceiling"
)
print("\n| phase | seconds | share of wall | examples/s | of its ceiling |\n|---|---|---|---|---|")
for phase, seconds in sorted(timer.seconds.items(), key=lambda item: -item[1]):
    n = timer.examples[phase]
    rate = f"{n / seconds:,.0f}" if n else "-"
    share = f"{100 * n / seconds / ceilings[phase]:.0f}%" if n and phase in ceilings else "-"
    print(f"| {phase} | {seconds:.1f} | {100 * seconds / wall:.1f}% | {rate} | {share} |")
other = wall - sum(timer.seconds.values())
print(f"| other (loading, task plan, report, checkpoints) | {other:.1f} | {100 * other / wall:.1f}% | - | - |")
print(peak_memory())
