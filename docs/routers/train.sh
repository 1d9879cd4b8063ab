#!/bin/sh
# Issue 8, comparison 1: the same backbone and recipe (models/fmnist-softmoe.json: dim 64, depth 6,
# MoE in blocks 3-5 with 16 experts of hidden 128), the same seed, batches and 4-epoch schedule, on
# the CPU path. Every MoE layer gives its experts 32 rows per image, as Soft MoE's 16 x 2 slots:
# the sparse routers route groups of 8 images (392 tokens) with capacity factors that make each
# expert's capacity 16 rows per group (Tokens Choice K=1 and Experts Choice c = 32/49, K=2
# c = 16/49), so every model does the same expert FLOPs.
# Several copies may run at once (one per core, with OMP_NUM_THREADS=1): each model is trained once.
# Usage: docs/routers/train.sh [OUTDIR]   (SOFTMOE: the softmoe binary, default build/softmoe)
set -eu
S=${SOFTMOE:-build/softmoe}
OUT=${1:-docs/routers/models}
mkdir -p "$OUT"
run() {
    name=$1; shift
    mkdir "$OUT/$name.claim" 2> /dev/null || return 0 # done or being trained by another copy
    "$S" train --config models/fmnist-softmoe.json --device cpu --epochs 4 \
        --out "$OUT/$name.safetensors" --csv "$OUT/$name.csv" "$@" > "$OUT/$name.log" 2>&1
}
run tc1 --moe-kind tokens_choice --top-k 1 --capacity-factor 0.65306 --group-size 392
run tc2 --moe-kind tokens_choice --top-k 2 --capacity-factor 0.32653 --group-size 392
run ec --moe-kind experts_choice --capacity-factor 0.65306 --group-size 392
run soft
run dense --dense
