#!/bin/sh
# The softmoe command end to end: run (layer and ViT, good and malformed input, injected Vulkan
# faults), train (with an interrupted run resumed to the same curve, and a NaN loss stopping it),
# eval --json, classify. $1: the softmoe binary, $2: the golden directory.
set -u
SOFTMOE=$1
GOLDEN=$2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; fi; }

# run: a golden layer case on both paths
L=$GOLDEN/layer_b2_m16_d32_n4_p2_h64
for dev in cpu vulkan; do
    "$SOFTMOE" run --device $dev --model $L.model.safetensors --input $L.input.safetensors --output "$T/out-$dev.st"
    check "run layer on $dev" "[ \$? -eq 0 ] && [ -s '$T/out-$dev.st' ]"
done
# run: an input that does not match the model is refused, names the tensor, writes nothing
"$SOFTMOE" run --device cpu --model $L.model.safetensors --input $GOLDEN/layer_b1_m7_d16_n3_p3_h40.input.safetensors \
    --output "$T/bad.st" 2> "$T/err.txt"
check "mismatched input exits non-zero" "[ \$? -ne 0 ]"
check "mismatched input names the tensor" "grep -q '\"x\"' '$T/err.txt'"
check "mismatched input writes nothing" "[ ! -e '$T/bad.st' ]"
# run: a truncated model file is refused
head -c 100 $L.model.safetensors > "$T/trunc.st"
"$SOFTMOE" run --device cpu --model "$T/trunc.st" --input $L.input.safetensors --output "$T/bad.st" 2> "$T/err.txt"
check "truncated model exits non-zero" "[ \$? -ne 0 ] && [ ! -e '$T/bad.st' ] && [ -s '$T/err.txt' ]"
# run: Vulkan faults injected (SOFTMOE_FAULT): a lost device and device memory running out end
# the command with the status and the failing call on stderr, and no output file
for fault in vkQueueSubmit:1:VK_ERROR_DEVICE_LOST vkAllocateMemory:2; do
    SOFTMOE_FAULT=$fault "$SOFTMOE" run --device vulkan --model $L.model.safetensors --input $L.input.safetensors \
        --output "$T/fault.st" 2> "$T/err.txt"
    check "$fault exits non-zero" "[ \$? -ne 0 ] && [ ! -e '$T/fault.st' ] && [ ! -e '$T/fault.st.tmp' ]"
    check "$fault names the call and the result" "grep -q '${fault%%:*} failed: VK_ERROR' '$T/err.txt' && grep -q 'SMOE_ERROR' '$T/err.txt'"
done
SOFTMOE_FAULT=nonsense "$SOFTMOE" run --device vulkan --model $L.model.safetensors --input $L.input.safetensors \
    --output "$T/fault.st" 2> "$T/err.txt"
check "a malformed SOFTMOE_FAULT is refused" "[ \$? -ne 0 ] && grep -q 'SOFTMOE_FAULT' '$T/err.txt' && [ ! -e '$T/fault.st' ]"
# run: the golden ViT with labels gives logits, loss and gradients
V=$GOLDEN/vit_d32_L2_b3
"$SOFTMOE" run --device cpu --model $V.model.safetensors --input $V.input.safetensors --output "$T/vit.st"
check "run ViT" "[ \$? -eq 0 ] && [ -s '$T/vit.st' ]"

# train: a tiny model, 2 epochs; then the same run interrupted after epoch 1 and resumed
TINY="--device cpu --dim 16 --depth 2 --heads 2 --mlp-dim 32 --patch 7 --moe-layers 1 --experts 4 --slots 1 \
      --batch 64 --train-limit 640 --eval-limit 200 --seed 3"
"$SOFTMOE" train $TINY --epochs 2 --out "$T/full.st" --csv "$T/full.csv" 2> "$T/train.log"
check "train" "[ \$? -eq 0 ] && [ -s '$T/full.st' ]"
"$SOFTMOE" train $TINY --epochs 2 --out "$T/half.st" --checkpoint "$T/ck.st" --csv "$T/resumed.csv" --checkpoint-every 3 \
    --train-limit 640 2> /dev/null &
pid=$!
# stop it once the first checkpoint exists, mid-run
for i in $(seq 1 600); do [ -e "$T/ck.st" ] && break; sleep 0.05; done
kill -9 $pid 2> /dev/null; wait $pid 2> /dev/null
check "a checkpoint was written before the kill" "[ -e '$T/ck.st' ]"
"$SOFTMOE" train $TINY --epochs 2 --out "$T/half.st" --checkpoint "$T/ck.st" --csv "$T/resumed.csv" --checkpoint-every 3 \
    --resume 2> "$T/resume.log"
check "resume" "[ \$? -eq 0 ] && [ -s '$T/half.st' ]"
check "resumed model equals the uninterrupted one" "cmp -s '$T/full.st' '$T/half.st'"
check "resumed final curve row equals the uninterrupted one" \
    "[ \"\$(tail -1 '$T/full.csv' | cut -d, -f1-7)\" = \"\$(tail -1 '$T/resumed.csv' | cut -d, -f1-7)\" ]"

# train: a loss that becomes NaN (a learning rate of 1e30) stops training with a message; the
# last checkpoint is kept and loads, and no model is written
"$SOFTMOE" train $TINY --epochs 1 --lr 1e30 --checkpoint "$T/nan-ck.st" --checkpoint-every 1 --out "$T/nan.st" \
    2> "$T/nan.log"
check "a NaN loss stops training" "[ \$? -ne 0 ] && grep -q 'the loss became' '$T/nan.log' && [ ! -e '$T/nan.st' ]"
"$SOFTMOE" eval --device cpu --model "$T/nan-ck.st" --limit 50 > /dev/null 2>&1
check "the last checkpoint before the NaN loss loads" "[ \$? -eq 0 ]"

# eval --json
"$SOFTMOE" eval --device cpu --model "$T/full.st" --json --limit 300 > "$T/eval.json"
check "eval --json" "[ \$? -eq 0 ] && grep -q '\"accuracy\"' '$T/eval.json' && grep -q '\"images\": 300' '$T/eval.json' \
    && grep -q '\"images_per_second\"' '$T/eval.json' && grep -q '\"device\": \"cpu\"' '$T/eval.json'"

# classify a PGM image
printf 'P5\n28 28\n255\n' > "$T/img.pgm"
head -c 784 /dev/urandom >> "$T/img.pgm"
"$SOFTMOE" classify --device cpu --model "$T/full.st" --top 2 "$T/img.pgm" > "$T/cls.txt"
check "classify" "[ \$? -eq 0 ] && grep -q '%' '$T/cls.txt'"
"$SOFTMOE" classify --device cpu --model "$T/full.st" "$T/missing.png" 2> /dev/null
check "classify of a missing file fails" "[ \$? -ne 0 ]"

[ $fail -eq 0 ] && echo "test_cli: ok"
exit $fail
