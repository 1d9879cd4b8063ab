#!/bin/sh
# Issue 9's models: Soft MoE ViTs with a fixed expert parameter budget (n experts x hidden 2048/n
# in each of blocks 3-5, one slot per expert, so parameters and expert FLOPs are the same for every
# n) and otherwise the shipped model's recipe, 3 epochs each, on the CPU path.
# Several copies may run at once (one per core, with OMP_NUM_THREADS=1): each model is trained once.
# Usage: docs/expert-subset/train.sh [OUTDIR]   (SOFTMOE: the softmoe binary, default build/softmoe)
set -eu
S=${SOFTMOE:-build/softmoe}
OUT=${1:-docs/expert-subset/models}
mkdir -p "$OUT"
for n in 2 8 16 64; do
    mkdir "$OUT/n$n.claim" 2> /dev/null || continue # done or being trained by another copy
    "$S" train --config models/fmnist-softmoe.json --device cpu --epochs 3 \
        --experts $n --slots 1 --expert-mlp-dim $((2048 / n)) \
        --out "$OUT/n$n.safetensors" --csv "$OUT/n$n.csv" > "$OUT/n$n.log" 2>&1
done
