"""The ceiling of training speed: forward + backward of the layers that train (the top encoder
layers, the head and the classifier, on the cached frozen-layer outputs), in examples/s, on the
dataset's own sentence lengths; shuffled batches against batches sorted by length, with the
fraction of word-piece slots spent on padding; and the peak resident memory.

python benchmarks/encoder_throughput.py --data-dir ../shared/data/fewrel [--freeze-layers 4] [--batches 20]
"""

import argparse
import resource
import time

import torch
from _machine import header
from torch import nn

from cml.config import RunConfig
from cml.data import load_dataset
from cml.encoder import load_tokenizer, tokenize
from cml.runner import build_model

args = argparse.ArgumentParser()
args.add_argument("--dataset", default="fewrel")
args.add_argument("--data-dir", default="../shared/data/fewrel")
args.add_argument("--encoder", default="minilm")
args.add_argument("--freeze-layers", type=int, default=4)
args.add_argument("--max-length", type=int, default=128)
args.add_argument("--batch-size", type=int, default=16)
args.add_argument("--batches", type=int, default=20)
a = args.parse_args()
header()

config = RunConfig()
config.encoder.name, config.encoder.freeze_layers, config.encoder.max_length = a.encoder, a.freeze_layers, a.max_length
dataset = load_dataset(a.dataset, a.data_dir)
tokenizer = load_tokenizer(a.encoder)
split = tokenize(tokenizer, dataset.train, dataset.label_of, a.max_length)
model = build_model(config, tokenizer, len(dataset.relations))
pad_id = tokenizer.pad_token_id or 0
n = a.batch_size * a.batches
seen = torch.ones(len(dataset.relations), dtype=torch.bool)
print(f"{a.encoder}, {a.freeze_layers} frozen layers, batch {a.batch_size}, {a.batches} batches of {a.dataset} train")

generator = torch.Generator().manual_seed(0)
sample = torch.randperm(len(split), generator=generator)[:n]
plans = {
    "shuffled": sample.split(a.batch_size),
    "sorted by length": sample[torch.argsort(split.lengths[sample], stable=True)].split(a.batch_size),
}
for name, batches in plans.items():
    prepared = []
    for index in batches:
        batch = split.batch(index, pad_id)
        if a.freeze_layers:
            batch["hidden"] = model.encoder.bottom(batch["input_ids"], batch["attention_mask"])
        prepared.append(batch)
    slots = sum(b["attention_mask"].numel() for b in prepared)
    real = sum(int(b["attention_mask"].sum()) for b in prepared)
    model.train()
    loss = nn.functional.cross_entropy(model(prepared[0], seen), prepared[0]["labels"])
    loss.backward()  # warm-up
    start = time.perf_counter()
    for batch in prepared:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(batch, seen), batch["labels"]).backward()
    elapsed = time.perf_counter() - start
    print(f"{name}: {n / elapsed:,.1f} examples/s forward+backward, padding {100 * (1 - real / slots):.1f}% of slots")
print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
