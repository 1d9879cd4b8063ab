#!/bin/sh
# The exported ABI: libsoftmoe.so exports exactly the functions softmoe.h declares with SMOE_API
# (all smoe_*, nothing else: no internal function, no volk symbol), with the expected SONAME; the
# installable libsoftmoe.a defines the same global symbols and nothing else.
# $1 libsoftmoe.so  $2 the installable libsoftmoe.a  $3 softmoe.h  $4 the expected SONAME
set -u
SO=$1 AR=$2 HEADER=$3 SONAME=$4
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; fi; }

nm -D --defined-only "$SO" | awk '{print $NF}' | sort -u > "$T/so.txt"
nm -g --defined-only "$AR" | awk 'NF >= 3 {print $NF}' | sort -u > "$T/a.txt"
# every name declared SMOE_API (declarations may span lines: join, then pick "smoe_x(" after SMOE_API)
tr '\n' ' ' < "$HEADER" | grep -o 'SMOE_API [^;(]*(' | grep -o 'smoe_[a-z0-9_]*($' | tr -d '(' | sort -u > "$T/api.txt"

check "libsoftmoe.so exports only smoe_ symbols: $(grep -v '^smoe_' "$T/so.txt" | tr '\n' ' ')" \
    "! grep -qv '^smoe_' '$T/so.txt'"
check "libsoftmoe.so exports exactly the SMOE_API functions of softmoe.h: $(diff "$T/api.txt" "$T/so.txt" | grep '^[<>]' | tr '\n' ' ')" \
    "cmp -s '$T/api.txt' '$T/so.txt'"
check "libsoftmoe.a defines the same global symbols: $(diff "$T/so.txt" "$T/a.txt" | grep '^[<>]' | tr '\n' ' ')" \
    "cmp -s '$T/so.txt' '$T/a.txt'"
check "volk's globals are local in libsoftmoe.a" \
    "nm --defined-only '$AR' | grep -q ' [bBdD] vkCreateInstance\$' && ! nm -g --defined-only '$AR' | grep -q vkCreateInstance"
check "SONAME is $SONAME" "objdump -p '$SO' | grep -q 'SONAME *$SONAME\$'"
check "the API is not empty" "[ \$(wc -l < '$T/api.txt') -gt 30 ]"
echo "  $(wc -l < "$T/so.txt") exported symbols, all declared SMOE_API in softmoe.h; SONAME $SONAME"
[ $fail -eq 0 ] && echo "test_abi: ok"
exit $fail
