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

# --version: the library, the Vulkan loader (asked of the loader, no device opened), the shader compiler
"$SOFTMOE" --version > "$T/version.txt"
check "--version exits 0" "[ \$? -eq 0 ]"
check "--version names the library" "grep -q '^softmoe [0-9][0-9.]*\$' '$T/version.txt'"
check "--version names the Vulkan loader" "grep -q '^Vulkan loader [0-9]*\\.[0-9]*\\.[0-9]*\$' '$T/version.txt'"
check "--version names the SPIR-V compiler" "grep -q '^SPIR-V compiler glslangValidator [0-9]' '$T/version.txt'"

# --help on every subcommand: its own help (one usage block) on stdout, exit 0, nothing on stderr
for cmd in devices run train eval classify bench; do
    for h in --help -h; do
        "$SOFTMOE" $cmd $h > "$T/help.txt" 2> "$T/err.txt"
        check "$cmd $h exits 0" "[ \$? -eq 0 ] && [ ! -s '$T/err.txt' ]"
        check "$cmd $h prints one usage block of $cmd" \
            "[ \$(grep -c '^usage:' '$T/help.txt') -eq 1 ] && grep -q '^usage: softmoe $cmd' '$T/help.txt'"
    done
done
"$SOFTMOE" eval --model nothing.st --help > "$T/help.txt"
check "eval --help after other options" "[ \$? -eq 0 ] && grep -q '^usage: softmoe eval' '$T/help.txt'"

# an unknown option is named, with the closest valid one of that subcommand
for c in "eval --modle:--model" "run --inptu:--input" "train --epoch:--epochs" "classify --tpo:--top" \
    "eval --keep-expert:--keep-experts"; do
    args=${c%%:*} want=${c#*:}
    "$SOFTMOE" $args 1 x > /dev/null 2> "$T/err.txt"
    check "$args is refused as unknown, suggesting $want" \
        "[ \$? -eq 2 ] && grep -q 'unknown option \"${args#* }\" (did you mean \"$want\"?)' '$T/err.txt'"
done

# run: a golden layer case on both paths
L=$GOLDEN/layer_b2_m16_d32_n4_p2_h64
for dev in cpu vulkan; do
    "$SOFTMOE" run --device $dev --model $L.model.safetensors --input $L.input.safetensors --output "$T/out-$dev.st"
    check "run layer on $dev" "[ \$? -eq 0 ] && [ -s '$T/out-$dev.st' ]"
done
# --opt=value is --opt value; a flag takes no value
"$SOFTMOE" run --device=cpu --model=$L.model.safetensors --input=$L.input.safetensors --output="$T/out-eq.st"
check "run --opt=value" "[ \$? -eq 0 ] && cmp -s '$T/out-cpu.st' '$T/out-eq.st'"
"$SOFTMOE" eval --json=1 --model=$L.model.safetensors > /dev/null 2>&1
check "a flag with =value is refused" "[ \$? -eq 2 ]"
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

# run --keep-experts (expert-subset inference): an x-only input [2, 3, 32] written here, a safetensors
# file of 8 length bytes, a 64-byte header and 192 floats cycling through 1, -0.5, 0.25, 2, -1.5
X="$T/x.st"
printf '\100\000\000\000\000\000\000\000%-64s' '{"x":{"dtype":"F32","shape":[2,3,32],"data_offsets":[0,768]}}' > "$X"
i=0
while [ $i -lt 192 ]; do
    case $((i % 5)) in
        0) printf '\000\000\200\077' ;; 1) printf '\000\000\000\277' ;; 2) printf '\000\000\200\076' ;;
        3) printf '\000\000\000\100' ;; 4) printf '\000\000\300\277' ;;
    esac
    i=$((i + 1))
done >> "$X"
for dev in cpu vulkan; do
    "$SOFTMOE" run --device $dev --model $L.model.safetensors --input "$X" --output "$T/all-$dev.st"
    check "run x-only input on $dev" "[ \$? -eq 0 ] && [ -s '$T/all-$dev.st' ]"
    "$SOFTMOE" run --device $dev --model $L.model.safetensors --input "$X" --output "$T/k4-$dev.st" --keep-experts 4
    check "run --keep-experts 4 (all 4 experts) on $dev is the plain layer" "cmp -s '$T/all-$dev.st' '$T/k4-$dev.st'"
    "$SOFTMOE" run --device $dev --model $L.model.safetensors --input "$X" --output "$T/k2-$dev.st" --keep-experts 1/2
    check "run --keep-experts 1/2 on $dev" "[ \$? -eq 0 ] && [ -s '$T/k2-$dev.st' ] && ! cmp -s '$T/all-$dev.st' '$T/k2-$dev.st'"
    "$SOFTMOE" run --device $dev --model $L.model.safetensors --input "$X" --output "$T/k1r-$dev.st" --keep-experts 0.25 \
        --renormalize
    check "run --keep-experts 0.25 --renormalize on $dev" "[ \$? -eq 0 ] && [ -s '$T/k1r-$dev.st' ]"
done
# gradients need all experts: refused with a message, nothing written
"$SOFTMOE" run --device cpu --model $L.model.safetensors --input $L.input.safetensors --output "$T/bad.st" \
    --keep-experts 2 2> "$T/err.txt"
check "run --keep-experts with dy is refused" "[ \$? -ne 0 ] && [ ! -e '$T/bad.st' ] && grep -q 'all experts' '$T/err.txt'"
for bad in 1/0 3/2 abc -1 0.0 1.5; do
    "$SOFTMOE" run --device cpu --model $L.model.safetensors --input "$X" --output "$T/bad.st" --keep-experts "$bad" \
        2> /dev/null
    check "run --keep-experts $bad is refused" "[ \$? -eq 2 ] && [ ! -e '$T/bad.st' ]"
done

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

# train a Tokens Choice ViT from a JSON config (flags after it override it); the model file names
# its router and the sparse settings; eval reads it back
printf '{"moe_kind": "tokens_choice", "top_k": 2, "capacity_factor": 1.25, "group_size": 32, "expert_mlp_dim": 12, "epochs": 1}\n' \
    > "$T/tc.json"
"$SOFTMOE" train --config "$T/tc.json" $TINY --train-limit 320 --out "$T/tc.st" 2> "$T/tc.log"
check "train tokens choice" "[ \$? -eq 0 ] && [ -s '$T/tc.st' ] && grep -q 'Tokens Choice' '$T/tc.log'"
check "the model file names the router" "grep -aq 'tokens_choice' '$T/tc.st' && grep -aq 'moe.gate.weight' '$T/tc.st'"
check "the config file's expert_mlp_dim is in the metadata" "grep -aq 'expert_mlp_dim..: 12' '$T/tc.st'"
"$SOFTMOE" eval --device cpu --model "$T/tc.st" --json --limit 100 > "$T/tc-eval.json"
check "eval tokens choice" "[ \$? -eq 0 ] && grep -q '\"images\": 100' '$T/tc-eval.json'"
"$SOFTMOE" train $TINY --epochs 1 --top-k 2 --out "$T/bad.st" 2> "$T/err.txt"
check "sparse settings without a sparse kind are refused" "[ \$? -eq 2 ] && grep -q 'moe-kind' '$T/err.txt' && [ ! -e '$T/bad.st' ]"
"$SOFTMOE" train $TINY --epochs 1 --moe-kind sparse --out "$T/bad.st" 2> /dev/null
check "an unknown moe kind is refused" "[ \$? -eq 2 ] && [ ! -e '$T/bad.st' ]"
# train: experts with their own hidden size (--expert-mlp-dim): in the metadata, and eval reads it;
# a model whose experts match mlp_dim is written without the key
"$SOFTMOE" train $TINY --epochs 1 --train-limit 320 --expert-mlp-dim 8 --out "$T/emd.st" 2> "$T/emd.log"
check "train --expert-mlp-dim" "[ \$? -eq 0 ] && [ -s '$T/emd.st' ] && grep -q '4 experts (mlp 8) x 1 slots' '$T/emd.log'"
check "--expert-mlp-dim is in the metadata" "grep -aq 'expert_mlp_dim..: 8' '$T/emd.st'"
check "a model without its own expert size has no expert_mlp_dim key" "! grep -aq 'expert_mlp_dim' '$T/full.st'"
"$SOFTMOE" eval --device vulkan --model "$T/emd.st" --json --limit 100 > "$T/emd-eval.json"
check "eval --expert-mlp-dim model" "[ \$? -eq 0 ] && grep -q '\"images\": 100' '$T/emd-eval.json'"
"$SOFTMOE" train $TINY --epochs 1 --expert-mlp-dim 0 --out "$T/bad.st" 2> /dev/null
check "--expert-mlp-dim 0 is refused" "[ \$? -eq 2 ] && [ ! -e '$T/bad.st' ]"
# train: the routing ablation (--dispatch, --combine, or the config file's keys): in the metadata
# only where not soft, eval reads the model; identity needs as many slots as tokens (16 here)
"$SOFTMOE" train $TINY --epochs 1 --train-limit 320 --dispatch uniform --out "$T/mix.st" 2> "$T/mix.log"
check "train --dispatch uniform" "[ \$? -eq 0 ] && grep -q 'uniform dispatch, soft combine' '$T/mix.log'"
check "the dispatch is in the metadata, the soft combine is not" \
    "grep -aq 'dispatch..: ..uniform' '$T/mix.st' && ! grep -aq 'combine..:' '$T/mix.st' && ! grep -aq 'dispatch' '$T/full.st'"
"$SOFTMOE" eval --device vulkan --model "$T/mix.st" --json --limit 100 > "$T/mix-eval.json"
check "eval a uniform-dispatch model" "[ \$? -eq 0 ] && grep -q '\"images\": 100' '$T/mix-eval.json'"
printf '{"dispatch": "identity", "combine": "identity", "experts": 16, "slots": 1, "epochs": 1}\n' > "$T/id.json"
"$SOFTMOE" train --config "$T/id.json" $TINY --experts 16 --train-limit 128 --out "$T/id.st" 2> "$T/id.log"
check "train identity dispatch and combine" "[ \$? -eq 0 ] && grep -aq 'combine..: ..identity' '$T/id.st'"
"$SOFTMOE" train $TINY --epochs 1 --dispatch identity --combine identity --out "$T/bad.st" 2> "$T/err.txt"
check "identity with 4 slots for 16 tokens is refused" "[ \$? -ne 0 ] && grep -q 'must equal the 16 tokens' '$T/err.txt' && [ ! -e '$T/bad.st' ]"
"$SOFTMOE" train $TINY --epochs 1 --combine hard --out "$T/bad.st" 2> /dev/null
check "an unknown combine is refused" "[ \$? -eq 2 ] && [ ! -e '$T/bad.st' ]"
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

# eval keeping half of the 4 experts (top-scoring, then random), as JSON
"$SOFTMOE" eval --device cpu --model "$T/full.st" --json --limit 300 --keep-experts 1/2 > "$T/eval-k.json"
check "eval --keep-experts 1/2" "[ \$? -eq 0 ] && grep -q '\"keep_experts\": 2, \"experts\": 4, \"renormalize\": 0' '$T/eval-k.json'"
"$SOFTMOE" eval --device cpu --model "$T/full.st" --json --limit 300 --keep-experts 2 --random-experts 7 > "$T/eval-r.json"
check "eval --random-experts" "[ \$? -eq 0 ] && grep -q '\"random_seed\": 7' '$T/eval-r.json'"

# classify a PGM image
printf 'P5\n28 28\n255\n' > "$T/img.pgm"
head -c 784 /dev/urandom >> "$T/img.pgm"
"$SOFTMOE" classify --device cpu --model "$T/full.st" --top 2 "$T/img.pgm" > "$T/cls.txt"
check "classify" "[ \$? -eq 0 ] && grep -q '%' '$T/cls.txt'"
"$SOFTMOE" classify --device vulkan --model "$T/full.st" --keep-experts 1 --renormalize "$T/img.pgm" > "$T/cls-k.txt"
check "classify --keep-experts" "[ \$? -eq 0 ] && grep -q '%' '$T/cls-k.txt'"
"$SOFTMOE" classify --device cpu --model "$T/full.st" "$T/missing.png" 2> /dev/null
check "classify of a missing file fails" "[ \$? -ne 0 ]"

# bench --experts --csv: one shape at three expert counts (same 16 slots), Soft MoE and the three
# sparse routers, both passes: 24 rows; a count that does not divide the slots is refused
"$SOFTMOE" bench --device cpu --no-vit --routers --shape 1,16,8,4,4 --experts 2,4,16 --repeat 1 --csv "$T/sweep.csv" \
    > /dev/null 2> "$T/err.txt"
check "bench --experts --csv" "[ \$? -eq 0 ] && [ \$(wc -l < '$T/sweep.csv') -eq 25 ] && grep -q '^cpu,experts_choice,1,16,8,16,1,forward+backward,' '$T/sweep.csv'"
"$SOFTMOE" bench --device cpu --no-vit --shape 1,16,8,4,4 --experts 3 --csv "$T/bad.csv" > /dev/null 2> "$T/err.txt"
check "bench --experts refuses a count that does not divide the slots" "[ \$? -ne 0 ] && grep -q 'do not divide' '$T/err.txt' && [ ! -e '$T/bad.csv' ]"

# bench --vit-only: the ViT rows alone
"$SOFTMOE" bench --device cpu --vit-only --vit "$T/full.st" --vit-batch 2 --json > "$T/vit.json" 2> /dev/null
check "bench --vit-only" "[ \$? -eq 0 ] && grep -q '\"kind\": \"vit\"' '$T/vit.json' && ! grep -q '\"kind\": \"layer\"' '$T/vit.json'"

# output paths are checked before any work (issue 18): an --out, --checkpoint or --csv that cannot
# be written fails at once with exit 2, naming the option and the path, before any step or data
: > "$T/afile"
for bad in "--out $T/missing/x.st" "--checkpoint $T/missing/ck.st" "--csv $T/afile/c.csv" "--out $T"; do
    start=$(date +%s)
    "$SOFTMOE" train $TINY --epochs 50 --out "$T/never.st" $bad 2> "$T/err.txt"
    rc=$?
    took=$(( $(date +%s) - start ))
    check "train $bad exits 2" "[ $rc -eq 2 ]"
    check "train $bad names the option and path" "grep -qF -- '${bad%% *} ${bad#* }' '$T/err.txt'"
    check "train $bad fails before any step" "! grep -q 'epoch' '$T/err.txt' && [ $took -le 5 ] && [ ! -e '$T/never.st' ]"
done
"$SOFTMOE" train $TINY --out "$T/same.st" --checkpoint "$T/same.st" 2> "$T/err.txt"
check "train --checkpoint equal to --out is refused" "[ \$? -eq 2 ] && grep -q 'same file' '$T/err.txt' && [ ! -e '$T/same.st' ]"
if [ "$(id -u)" -ne 0 ]; then
    mkdir "$T/ro" && chmod a-w "$T/ro"
    "$SOFTMOE" train $TINY --out "$T/ro/x.st" 2> "$T/err.txt"
    check "train --out in a read-only directory fails fast" "[ \$? -eq 2 ] && grep -q 'not writable' '$T/err.txt' && ! grep -q epoch '$T/err.txt'"
    chmod u+w "$T/ro"
fi
# run: an output that is the model or the input, by name or through a link, is refused, nothing written
cp $L.model.safetensors "$T/m.st"
cp $L.input.safetensors "$T/i.st"
ln -s "$T/m.st" "$T/m-link.st"
for out in "$T/m.st" "$T/m-link.st" "$T/i.st"; do
    "$SOFTMOE" run --device cpu --model "$T/m.st" --input "$T/i.st" --output "$out" 2> "$T/err.txt"
    check "run --output $out equal to an input is refused" "[ \$? -eq 2 ] && grep -q 'same file' '$T/err.txt'"
    check "run --output $out leaves the inputs unchanged" "cmp -s '$T/m.st' $L.model.safetensors && cmp -s '$T/i.st' $L.input.safetensors"
done
"$SOFTMOE" run --device cpu --model "$T/m.st" --input "$T/i.st" --output "$T/missing/o.st" 2> "$T/err.txt"
check "run --output in a missing directory is refused" "[ \$? -eq 2 ] && grep -q 'does not exist' '$T/err.txt'"

# train --config: an unknown key is named as unknown, a syntax error by line and column, a flag
# takes true or false; nothing is trained
echo '{"dimm": 32}' > "$T/c1.json"
"$SOFTMOE" train --config "$T/c1.json" --out "$T/c.st" 2> "$T/err.txt"
check "a config file's unknown key is reported as unknown" "[ \$? -eq 2 ] && grep -q 'unknown key \"dimm\"' '$T/err.txt'"
printf '{\n  "dim": 32,\n  "depth": 2\n  "heads": 2\n}\n' > "$T/c2.json"
"$SOFTMOE" train --config "$T/c2.json" --out "$T/c.st" 2> "$T/err.txt"
check "a config file's JSON error gives its line and column" "[ \$? -eq 2 ] && grep -q 'c2.json:4:3: not valid JSON' '$T/err.txt'"
echo '{"dense": "yes"}' > "$T/c3.json"
"$SOFTMOE" train --config "$T/c3.json" --out "$T/c.st" 2> "$T/err.txt"
check "a config file's flag takes only true or false" "[ \$? -eq 2 ] && grep -q 'bad value for \"dense\"' '$T/err.txt'"
check "no model is written for a bad config file" "[ ! -e '$T/c.st' ]"

[ $fail -eq 0 ] && echo "test_cli: ok"
exit $fail
