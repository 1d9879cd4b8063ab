#!/bin/sh
# Issue 8, comparison 3 (the Soft MoE paper's Table 2 in miniature): Soft MoE blocks 3-5 with 7
# experts x 7 slots (49 slots for the 49 tokens of a 28x28 image in 4x4 patches, so that identity
# dispatch and combine are possible), expert hidden 128, the shipped model's recipe on a 2-epoch
# schedule, each dispatch/combine variant and the dense twin; then each model's test accuracy.
# Several copies may run at once (one per core, with OMP_NUM_THREADS=1): each model is trained once.
# Usage: docs/routers/ablation.sh [OUTDIR]   (SOFTMOE: the softmoe binary, default build/softmoe)
set -eu
S=${SOFTMOE:-build/softmoe}
OUT=${1:-docs/routers/ablation}
mkdir -p "$OUT"
run() {
    name=$1; shift
    mkdir "$OUT/$name.claim" 2> /dev/null || return 0 # done or being trained by another copy
    "$S" train --config models/fmnist-softmoe.json --device cpu --epochs 2 --experts 7 --slots 7 \
        --out "$OUT/$name.safetensors" --csv "$OUT/$name.csv" "$@" > "$OUT/$name.log" 2>&1
}
run soft-soft
run soft-uniform --combine uniform
run uniform-soft --dispatch uniform
run uniform-uniform --dispatch uniform --combine uniform
run identity --dispatch identity --combine identity
run dense --dense
