#!/usr/bin/env bash
# The GPU check, at most 8 minutes on one GPU: the test suite (every test that runs the learner
# takes `--device auto`, so on a GPU machine it runs on CUDA), the demo on `--device cuda`, and a
# timed full-FewRel order of cml with MiniLM, every layer trained. One summary line per check;
# the logs go to $OUT (default runs/gpu-check). FewRel is read from $FEWREL_DIR (default
# ../shared/data/fewrel); without it that check says so and is skipped.
#
#   bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
OUT=${OUT:-runs/gpu-check}
FEWREL_DIR=${FEWREL_DIR:-../shared/data/fewrel}
rm -rf "$OUT" && mkdir -p "$OUT"
lines=()

timed() {  # timed NAME LIMIT_S COMMAND...: runs it, logs it, sets $rc and $took
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    took=$((SECONDS - began))
}

device=$(python -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" 2>&1 | tail -1)
lines+=("device: $device (torch $(python -c 'import torch; print(torch.__version__)' 2>/dev/null))")
if [ "$device" = "none" ]; then
    printf '%s\n' "${lines[@]}" "no CUDA device: nothing else checked"
    exit 1
fi

timed tests 240 python -m pytest -q -p no:cacheprovider
lines+=("tests: exit $rc in ${took} s: $(grep -E '(passed|failed)' "$OUT/tests.log" | tail -1)")

timed demo 120 python run_cml.py --config configs/demo.yaml --device cuda --output "$OUT/demo"
lines+=("demo on cuda: exit $rc in ${took} s:$(grep 'final whole accuracy' "$OUT/demo.log" | tr -s ' ' | tr '\n' ';')")

if [ -f "$FEWREL_DIR/train.json" ]; then
    timed fewrel 210 python run_cml.py --config configs/fewrel.yaml --data-dir "$FEWREL_DIR" --method cml \
        --orders 1 --freeze-layers 0 --device cuda --output "$OUT/fewrel"
    lines+=("full FewRel, 1 order of cml, MiniLM every layer trained: exit $rc in ${took} s:$(grep 'final whole accuracy' "$OUT/fewrel.log" | tr -s ' ')")
else
    lines+=("full FewRel: skipped, no $FEWREL_DIR/train.json (set FEWREL_DIR)")
fi
printf '%s\n' "${lines[@]}"
