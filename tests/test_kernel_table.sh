#!/bin/sh
# The kernel table generator (cmake/kernel_table.c): it reads bindings, texel buffers, push
# constants and specialization constants from the SPIR-V, and refuses, naming the shader, what it
# cannot describe.
# $1 the softmoe_kernel_table tool  $2 glslangValidator  $3 shaders/ (for common/interface.h)
set -u
TOOL=$1 GLSLANG=$2 SHADERS=$3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
HEAD='#version 450
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;'

# compile NAME SOURCE: NAME.spv in $T
compile() { printf '%s\n%s\n' "$HEAD" "$2" > "$T/$1.comp" && "$GLSLANG" -V --target-env vulkan1.1 -Os -I"$SHADERS" -o "$T/$1.spv" "$T/$1.comp" > /dev/null; }
# refuses NAME MESSAGE-PART SOURCE
refuses() {
    compile "$1" "$3" || { echo "FAIL: $1 does not compile"; fail=1; return; }
    if "$TOOL" "$T/o.c" "$T/o.h" -- "$T/$1.spv" 2> "$T/err"; then echo "FAIL: $1 accepted"; fail=1; return; fi
    grep -q "shaders/$1.comp: .*$2" "$T/err" || { echo "FAIL: $1: $(cat "$T/err")"; fail=1; }
}

refuses bad_uniform "uniform block" 'layout(binding = 0) uniform U { float a; } u;
layout(std430, binding = 1) buffer O { float o[]; };
void main() { o[0] = u.a; }'
refuses bad_push "SMOE_PUSH" 'layout(push_constant) uniform P { uint n; } pc;
layout(std430, binding = 0) buffer O { float o[]; };
void main() { o[0] = float(pc.n); }'
refuses bad_set "set 0" 'layout(std430, set = 1, binding = 0) buffer O { float o[]; };
void main() { o[0] = 1.0; }'
printf '#version 450\nlayout(local_size_x = 64) in;\nlayout(std430, binding = 0) buffer O { float o[]; };\nvoid main() { o[0] = 1.0; }\n' > "$T/bad_wg.comp"
"$GLSLANG" -V --target-env vulkan1.1 -o "$T/bad_wg.spv" "$T/bad_wg.comp" > /dev/null
if "$TOOL" "$T/o.c" "$T/o.h" -- "$T/bad_wg.spv" 2> "$T/err" || ! grep -q "shaders/bad_wg.comp: .*local_size_x_id" "$T/err"; then
    echo "FAIL: a fixed workgroup size accepted or not named"; fail=1
fi

# A kernel the table describes: a texel buffer at binding 2, SMOE_PUSH, constants up to 5.
compile good '#extension GL_GOOGLE_include_directive : require
#include "common/interface.h"
layout(constant_id = 5) const uint C5 = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };
layout(binding = 2) uniform textureBuffer t;
SMOE_PUSH(SMOE_PUSH_AXPY)
void main() { y[0] = pc.alpha * x[0] + texelFetch(t, 0).x + float(C5); }' || { echo "FAIL: good does not compile"; fail=1; }
if "$TOOL" "$T/o.c" "$T/o.h" common/interface.h -- "$T/good.spv"; then
    grep -q 'SMOE_K_GOOD' "$T/o.h" || { echo "FAIL: no SMOE_K_GOOD"; fail=1; }
    grep -q '\[SMOE_K_GOOD\] = {"good", spv_good, sizeof spv_good, 3, 0x4u, sizeof(smoe_push_axpy), 6}' "$T/o.c" ||
        { echo "FAIL: good's entry: $(grep 'SMOE_K_GOOD\]' "$T/o.c")"; fail=1; }
    grep -q '_Static_assert(sizeof(smoe_push_axpy) == 12' "$T/o.c" || { echo "FAIL: no push size check"; fail=1; }
else
    echo "FAIL: good refused"; fail=1
fi
[ $fail = 0 ] && echo "test_kernel_table: ok"
exit $fail
