#!/bin/sh
# softmoe train --resume from a checkpoint written mid-epoch: the resumed CSV equals an
# uninterrupted run's, row for row (the epoch's running sums are in the checkpoint), under exactly
# one header, and an interrupted run's CSV already holds its header. Each interrupted run is paused
# (SIGSTOP) until the checkpoint on disk is mid-epoch in the wanted epoch, then killed (SIGKILL):
# where the kill lands does not depend on the machine's speed. $1: the softmoe binary.
set -u
SOFTMOE=$1
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; fi; }

# 10 steps per epoch, 2 epochs
TINY="--device cpu --dim 16 --depth 2 --heads 2 --mlp-dim 32 --patch 7 --moe-layers 1 --experts 4 --slots 1 \
      --batch 64 --train-limit 640 --eval-limit 200 --seed 3 --epochs 2"
"$SOFTMOE" train $TINY --out "$T/full.st" --csv "$T/full.csv" 2> "$T/train.log"
check "train" "[ \$? -eq 0 ] && [ \$(wc -l < '$T/full.csv') -eq 3 ]"

# The training step of a checkpoint, from its metadata.
ck_step() { head -c 65536 "$1" 2> /dev/null | grep -ao '"softmoe.step":"[0-9]*"' | tr -cd '0-9'; }

# Runs training with a checkpoint every step and kills it once the checkpoint on disk is at a step
# in $1..$2 other than an epoch's last; returns 1 if the run ended first.
interrupt() {
    rm -f "$T/ck.st" "$T/ck.st.tmp" "$T/half.st" "$T/resumed.csv"
    "$SOFTMOE" train $TINY --out "$T/half.st" --checkpoint "$T/ck.st" --checkpoint-every 1 --csv "$T/resumed.csv" \
        2> /dev/null &
    pid=$!
    n=0
    while [ ! -e "$T/half.st" ] && [ $n -lt 4000 ]; do
        n=$((n + 1))
        if [ -e "$T/ck.st" ] && kill -STOP $pid 2> /dev/null; then
            s=$(ck_step "$T/ck.st")
            if [ -n "$s" ] && [ "$s" -ge "$1" ] && [ "$s" -le "$2" ] && [ $((s % 10)) -ne 0 ]; then
                kill -KILL $pid
                wait $pid 2> /dev/null
                return 0
            fi
            kill -CONT $pid
        fi
        sleep 0.005
    done
    kill -KILL $pid 2> /dev/null
    wait $pid 2> /dev/null
    return 1
}

for window in "1 9" "11 19"; do
    tries=0
    while ! interrupt $window && [ $tries -lt 5 ]; do tries=$((tries + 1)); done
    check "interrupted mid-epoch at a step in $window (step $(ck_step "$T/ck.st"))" "[ ! -e '$T/half.st' ] && [ -e '$T/ck.st' ]"
    check "the interrupted run's CSV starts with its header" "head -1 '$T/resumed.csv' | grep -q '^epoch,step,'"
    "$SOFTMOE" train $TINY --out "$T/half.st" --checkpoint "$T/ck.st" --checkpoint-every 1 --csv "$T/resumed.csv" \
        --resume 2> "$T/resume.log"
    check "resume from a step in $window" "[ \$? -eq 0 ] && [ -s '$T/half.st' ]"
    check "the resumed model equals the uninterrupted one" "cmp -s '$T/full.st' '$T/half.st'"
    check "the resumed CSV has one header" "[ \$(grep -c '^epoch,' '$T/resumed.csv') -eq 1 ]"
    check "the resumed CSV's rows equal the uninterrupted run's (window $window)" \
        "[ \"\$(cut -d, -f1-7 '$T/full.csv')\" = \"\$(cut -d, -f1-7 '$T/resumed.csv')\" ]"
    [ $fail -eq 0 ] || { echo "full:"; cat "$T/full.csv"; echo "resumed:"; cat "$T/resumed.csv"; }
done

[ $fail -eq 0 ] && echo "test_resume: ok"
exit $fail
