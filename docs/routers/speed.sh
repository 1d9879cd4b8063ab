#!/bin/sh
# Issue 8, comparison 2 (the paper's Figure 6 in miniature): one MoE layer, 2 sequences of 256
# tokens of width 64, experts of hidden 256, 1024 slots in all (Soft MoE: p = 1024/n slots per
# expert; the sparse routers: capacity factor 1024/256 = 4, so Experts Choice gives every expert
# 1024/n rows and Tokens Choice ceil(K*256*4/n) rounded up to a multiple of 4), n = 8 ... 1024
# experts, forward and forward+backward, on the CPU path and on the Vulkan device. The plots need
# matplotlib (Debian python3-matplotlib).
# Usage: docs/routers/speed.sh [VULKAN_DEVICE]   (SOFTMOE: the softmoe binary, default build/softmoe)
set -eu
S=${SOFTMOE:-build/softmoe}
VK=${1:-vulkan}
D=docs/routers
"$S" bench --device cpu --device "$VK" --no-vit --routers --shape 2,256,64,1024,1 \
    --experts 8,16,32,64,128,256,512,1024 --repeat 3 --csv "$D/speed.csv" > "$D/speed.txt"
for dev in cpu vulkan; do
    for pass in forward forward+backward; do
        tag=$(echo $pass | tr + -)
        awk -F, -v d=$dev -v p=$pass 'NR == 1 { print "router,experts,ms"; next }
            index($1, d) == 1 && $8 == p { print $2 "," $6 "," $9 }' "$D/speed.csv" > "$D/speed-$dev-$tag.csv"
        docs/plot.py "$D/speed-$dev-$tag.csv" --x experts --y ms --series router --logx --logy \
            --title "$pass time, $dev" --xlabel "experts (1024 slots in all)" --ylabel "ms (min of 3)" \
            --out "$D/speed-$dev-$tag.png"
    done
done
