"""The ceiling of training speed: forward + backward of the layers that train (the top encoder
layers, the head and the classifier, on the cached frozen-layer outputs), in examples/s, on the
dataset's own sentence lengths, in fp32 and bf16 autocast; shuffled batches against batches
sorted by length, with the fraction of word-piece slots spent on padding; and the peak memory.

python benchmarks/encoder_throughput.py --data-dir ../shared/data/fewrel [--freeze-layers 4] [--batches 20]
"""

import argparse

import torch
from _machine import forward_backward_rate, header, peak_memory

from cml.config import RunConfig
from cml.data import load_dataset
from cml.device import resolve_device
from cml.encoder import load_tokenizer
from cml.frozen import frozen_states
from cml.runner import build_model
from cml.tokens import tokenize

args = argparse.ArgumentParser()
args.add_argument("--dataset", default="fewrel")
args.add_argument("--data-dir", default="../shared/data/fewrel")
args.add_argument("--encoder", default="minilm")
args.add_argument("--freeze-layers", type=int, default=4)
args.add_argument("--max-length", type=int, default=128)
args.add_argument("--batch-size", type=int, default=16)
args.add_argument("--batches", type=int, default=20)
args.add_argument("--device", default="auto")
a = args.parse_args()
header()

config = RunConfig()
config.encoder.name, config.encoder.freeze_layers, config.encoder.max_length = a.encoder, a.freeze_layers, a.max_length
device = resolve_device(a.device)
dataset = load_dataset(a.dataset, a.data_dir)
tokenizer = load_tokenizer(a.encoder)
pad_id = tokenizer.pad_token_id or 0
model = build_model(config, tokenizer, len(dataset.relations)).to(device)
n = a.batch_size * a.batches
sample = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(0))[:n]
split = tokenize(tokenizer, [dataset.train[i] for i in sample], dataset.label_of, a.max_length)
if a.freeze_layers:
    split.hidden = frozen_states(model.encoder, split, pad_id, device=device)
split = split.to(device)
print(f"{a.encoder}, {a.freeze_layers} frozen layers, batch {a.batch_size}, {a.batches} batches of {a.dataset} train")
plans = {"shuffled": torch.arange(n), "sorted by length": torch.argsort(split.lengths, stable=True)}
for precision in ("fp32", "bf16"):
    for name, order in plans.items():
        rate, padding = forward_backward_rate(model, split, order, a.batch_size, pad_id, device, precision)
        print(f"{precision}, {name}: {rate:,.1f} examples/s forward+backward, padding {100 * padding:.1f}% of slots")
print(peak_memory())
