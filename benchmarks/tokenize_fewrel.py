"""Time tokenising every FewRel sentence (train + val + test) with entity markers.

python benchmarks/tokenize_fewrel.py --data-dir ../shared/data/fewrel [--encoder minilm]
"""

import argparse
import time

from _machine import header

from cml.data import load_dataset
from cml.encoder import load_tokenizer
from cml.tokens import tokenize

args = argparse.ArgumentParser()
args.add_argument("--data-dir", default="../shared/data/fewrel")
args.add_argument("--encoder", default="minilm")
args.add_argument("--max-length", type=int, default=128)
a = args.parse_args()
header()
dataset = load_dataset("fewrel", a.data_dir)
examples = dataset.train + dataset.val + dataset.test
tokenizer = load_tokenizer(a.encoder)
start = time.perf_counter()
split = tokenize(tokenizer, examples, dataset.label_of, a.max_length)
elapsed = time.perf_counter() - start
lengths = split.lengths.float()
print(f"sentences: {len(examples):,}")
print(f"tokenise time: {elapsed:.1f} s ({len(examples) / elapsed:,.0f} sentences/s)")
print(f"word pieces per sentence: mean {lengths.mean():.1f}, max {int(lengths.max())}")
