#!/bin/sh
# Issue 9's experiment: each model of train.sh evaluated on the 10,000 test images keeping all, 1/2,
# 1/4 and 1/8 of its experts per image and layer, chosen by combine mass (the method) or at random
# (seeds 1-10); then the table (summary.csv) and the plot (accuracy.png).
# Usage: docs/expert-subset/eval.sh [MODELDIR]   (SOFTMOE: the softmoe binary, default build/softmoe)
set -eu
S=${SOFTMOE:-build/softmoe}
M=${1:-docs/expert-subset/models}
D=docs/expert-subset
field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
# each model's evaluations go to results-nN.csv once (a model without them and with its file is
# evaluated; delete the file to redo it), then all of them to results.csv
for n in 2 8 16 64; do
    R="$M/results-n$n.csv"
    [ -e "$R" ] || [ ! -e "$M/n$n.safetensors" ] && continue
    : > "$R.tmp"
    fractions="1/1 1/2 1/4 1/8"
    [ $n = 2 ] && fractions="1/1 1/2" # 1/4 and 1/8 of 2 experts round up to the 1 of 1/2
    for f in $fractions; do
        j=$("$S" eval --model "$M/n$n.safetensors" --device cpu --json --keep-experts $f)
        k=$(echo "$j" | field keep_experts)
        echo "$n,$f,$k,top,0,$(echo "$j" | field accuracy),$(echo "$j" | field images_per_second)" >> "$R.tmp"
        [ $f = 1/1 ] && continue
        for seed in 1 2 3 4 5 6 7 8 9 10; do
            j=$("$S" eval --model "$M/n$n.safetensors" --device cpu --json --keep-experts $f --random-experts $seed)
            echo "$n,$f,$k,random,$seed,$(echo "$j" | field accuracy),$(echo "$j" | field images_per_second)" >> "$R.tmp"
        done
    done
    mv "$R.tmp" "$R"
done
{ echo "n,fraction,keep,method,seed,accuracy,images_per_second"; for n in 2 8 16 64; do cat "$M/results-n$n.csv" 2> /dev/null || true; done; } > "$D/results.csv"
# summary: per model and fraction, the method's accuracy, the random subsets' mean and standard
# deviation, and the method's inference speedup over all experts
awk -F, 'NR > 1 {
    key = $1 "," $2 "," $3
    if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
    if ($4 == "top") { top[key] = $6; ips[key] = $7; if ($2 == "1/1") all[$1] = $7 }
    else { s[key] += $6; q[key] += $6 * $6; c[key]++ }
} END {
    print "n,fraction,keep,top_accuracy,random_mean,random_std,top_vs_random,speedup"
    for (i = 1; i <= nk; i++) {
        key = order[i]; split(key, a, ",")
        mean = c[key] ? s[key] / c[key] : top[key]
        var = c[key] > 1 ? (q[key] - c[key] * mean * mean) / (c[key] - 1) : 0
        printf "%s,%.4f,%.4f,%.4f,%.4f,%.2f\n", key, top[key], mean, (var > 0 ? sqrt(var) : 0), top[key] - mean, ips[key] / all[a[1]]
    }
}' "$D/results.csv" > "$D/summary.csv"
# the plot: accuracy against the fraction kept, one line per model and choice, random with error bars
awk -F, 'NR > 1 { split($2, f, "/"); x = f[1] / f[2]
    print "n=" $1 " combine mass," x "," $4 ",0"
    if ($2 != "1/1") print "n=" $1 " random," x "," $5 "," $6
    else print "n=" $1 " random," x "," $4 ",0" }' "$D/summary.csv" |
    { echo "curve,fraction,accuracy,spread"; cat; } > "$D/plot.csv"
docs/plot.py "$D/plot.csv" --x fraction --y accuracy --series curve --yerr spread --logx \
    --title "Expert subsets, fixed expert budget" --width 900 \
    --xlabel "fraction of experts kept per image and layer" --ylabel "test accuracy" --out "$D/accuracy.png"
