#!/bin/sh
# Issue 9's inference speed: images/s of softmoe eval (the model's time on the 10,000 test images,
# batch 128, CPU path) keeping all, 1/2, 1/4 and 1/8 of the experts, best of 3; run it on an
# otherwise idle machine. Writes speed.csv.
# Usage: docs/expert-subset/speed.sh [MODELDIR]   (SOFTMOE: the softmoe binary, default build/softmoe)
set -eu
S=${SOFTMOE:-build/softmoe}
M=${1:-docs/expert-subset/models}
D=docs/expert-subset
field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
echo "n,fraction,keep,images_per_second,speedup" > "$D/speed.csv.tmp"
for n in 8 16 64; do
    all=0
    for f in 1/1 1/2 1/4 1/8; do
        best=0
        for r in 1 2 3; do
            j=$("$S" eval --model "$M/n$n.safetensors" --device cpu --json --keep-experts $f)
            best=$(echo "$j" | field images_per_second | awk -v b=$best '{ print ($1 > b ? $1 : b) }')
        done
        [ $f = 1/1 ] && all=$best
        k=$(echo "$j" | field keep_experts)
        echo "$n,$f,$k,$best,$(awk -v a=$best -v b=$all 'BEGIN { printf "%.2f", a / b }')" >> "$D/speed.csv.tmp"
    done
done
mv "$D/speed.csv.tmp" "$D/speed.csv"
