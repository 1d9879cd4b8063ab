#!/bin/sh
# Issue 8's tables and plots from the models of train.sh and ablation.sh: test accuracy (softmoe
# eval on the 10,000 test images), CPU-path training and inference images/s (softmoe bench
# --vit-only --vit MODEL, batch 128: run it on an otherwise idle machine), the curves; the plots by
# docs/plot.py (matplotlib: Debian python3-matplotlib).
# Usage: docs/routers/report.sh [MODELDIR [ABLATIONDIR]]   (SOFTMOE: the softmoe binary;
#        PART=quality or PART=ablation for one half)
set -eu
S=${SOFTMOE:-build/softmoe}
M=${1:-docs/routers/models}
A=${2:-docs/routers/ablation}
D=docs/routers
PART=${PART:-all}
field() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p"; }
params() { sed -n '1s/.*, \([0-9.]*M\) parameters.*/\1/p' "$1"; }
if [ $PART != ablation ]; then
echo "model,parameters,test_accuracy,training_images_per_second,inference_images_per_second" > "$D/quality.csv"
lab() {
    case $1 in
        dense) echo "dense ViT" ;; soft) echo "Soft MoE" ;; tc1) echo "Tokens Choice K=1" ;;
        tc2) echo "Tokens Choice K=2" ;; ec) echo "Experts Choice" ;;
    esac
}
for name in dense soft tc1 tc2 ec; do
    label=$(lab $name)
    acc=$("$S" eval --model "$M/$name.safetensors" --device cpu --json | field accuracy)
    b=$("$S" bench --device cpu --vit-only --vit "$M/$name.safetensors" --json 2> /dev/null | grep '"kind": "vit"')
    echo "$label,$(params "$M/$name.log"),$acc,$(echo "$b" | field training_images_per_second),$(echo "$b" | field inference_images_per_second)" >> "$D/quality.csv"
done
docs/plot.py "$D/quality.csv" --kind bar --x model --y test_accuracy --ylim 0.7,0.9 \
    --title "Matched cost, 4 epochs" --ylabel "test accuracy" --legend none --out "$D/quality.png"
{ echo "model,epoch,test_accuracy"
  for name in dense soft tc1 tc2 ec; do awk -F, -v n="$(lab $name)" 'NR > 1 { print n "," $1 "," $7 }' "$M/$name.csv"; done; } > "$D/curves.csv"
docs/plot.py "$D/curves.csv" --x epoch --y test_accuracy --series model --title "Test accuracy per epoch" \
    --ylabel "test accuracy" --out "$D/curves.png"
fi
[ $PART = quality ] && exit 0
echo "variant,test_accuracy" > "$D/ablation.csv"
for name in soft-soft soft-uniform uniform-soft uniform-uniform identity dense; do
    echo "$name,$("$S" eval --model "$A/$name.safetensors" --device cpu --json | field accuracy)" >> "$D/ablation.csv"
done
docs/plot.py "$D/ablation.csv" --kind bar --x variant --y test_accuracy \
    --title "Dispatch/combine ablation, 2 epochs" --ylabel "test accuracy" --legend none --out "$D/ablation.png"
