"""End-to-end throughput of a CRE run against the ceiling of the layers that train.

Runs `run_cml.py` with the flags given (the same flags), then measures, in the same process and
precision, forward + backward alone on the run's training sentences in length-sorted batches of
the run's batch size (the ceiling). Prints the training examples per second of the whole run
(everything counted: data loading, frozen-layer cache, training, evaluation, memory selection,
report), the ratio to the ceiling, where the wall time went, and the peak memory.

python benchmarks/run_throughput.py --dataset fewrel --data-dir ../shared/data/fewrel --orders 5 \\
    --method cml --freeze-layers 4 --output runs/fewrel-full
"""

import sys
import time

import torch
from _machine import forward_backward_rate, header, peak_memory

from cml.cli import config_from_args, parser
from cml.experiment import build_experiment
from cml.report import pm
from cml.runner import build_learner, resolved, run
from cml.timing import ENCODER_PHASES, TRAIN_PHASE, PhaseTimer

header()
args = parser().parse_args(sys.argv[1:])
config, _ = config_from_args(args)
start = time.perf_counter()
experiment = build_experiment(config)
timer = PhaseTimer(sync=True)
report = run(config, experiment, resume=bool(args.resume), timer=timer)
wall = time.perf_counter() - start

config, device = resolved(config)
model, data, _ = build_learner(config, experiment, device)
sample = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: 40 * config.train.batch_size]
by_length = sample[torch.argsort(data.train.lengths[sample], stable=True)]
ceiling, padding = forward_backward_rate(
    model, data.train, by_length, config.train.batch_size, data.pad_id, device, config.train.precision
)

examples = timer.examples[TRAIN_PHASE]
print(f"\ndevice {device}, precision {config.train.precision}, batch {config.train.batch_size}")
for name, m in report["methods"].items():
    print(f"{name}: final whole accuracy {pm(m['final_whole_accuracy'])}")
print(f"wall time (experiment + run): {wall / 60:.1f} min")
print(f"training examples (every epoch, memory replay included): {examples:,}")
print(f"end-to-end: {examples / wall:,.1f} training examples/s")
print(f"ceiling (forward+backward only, length-sorted, {100 * padding:.1f}% padding): {ceiling:,.1f} examples/s")
print(f"end-to-end / ceiling: {100 * examples / wall / ceiling:.0f}%")
print("\n| phase | seconds | share of wall | examples/s |\n|---|---|---|---|")
for phase, seconds in sorted(timer.seconds.items(), key=lambda item: -item[1]):
    rate = f"{timer.examples[phase] / seconds:,.0f}" if timer.examples[phase] else "-"
    print(f"| {phase} | {seconds:.1f} | {100 * seconds / wall:.1f}% | {rate} |")
other = wall - sum(timer.seconds.values())
print(f"| other (loading, task plan, report, checkpoints) | {other:.1f} | {100 * other / wall:.1f}% | - |")
encoder = sum(timer.seconds[p] for p in ENCODER_PHASES)
print(f"\nencoder compute ({', '.join(ENCODER_PHASES)}): {100 * encoder / wall:.0f}% of wall time")
print(peak_memory())
