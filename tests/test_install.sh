#!/bin/sh
# Installing softmoe and building an application against the installed tree, the four ways an
# application would: pkg-config with the shared library, pkg-config --static, examples/Makefile,
# and CMake's find_package (shared and static). Each build of examples/classify.c classifies a
# Fashion-MNIST test image and must print exactly what `softmoe classify` prints. Also: a static
# application that uses volk itself links libsoftmoe.a without symbol clashes (and, as a control,
# fails to link the in-tree archive whose internal symbols are still global).
# $1 build dir  $2 source dir  $3 the softmoe command  $4 extra C flags (sanitizers)  $5 volk's include dir
set -u
BUILD=$1 SRC=$2 SOFTMOE=$3 XCFLAGS=$4 VOLK=$5
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() { if eval "$2"; then echo "  ok: $1"; else echo "FAIL: $1"; fail=1; return 1; fi; }
CC=${CC:-cc}
WARN="-std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror"

# ---- install into a temporary prefix ----
cmake --install "$BUILD" --prefix "$T/p" > "$T/install.log" 2>&1
check "cmake --install" "[ \$? -eq 0 ]" || cat "$T/install.log"
PC=$(find "$T/p" -name softmoe.pc)
LIBDIR=$(dirname "$(dirname "$PC")")
check "installed: header" "[ -f '$T/p/include/softmoe.h' ]"
check "installed: shared library with its SONAME link" "[ -f \"\$(echo $LIBDIR/libsoftmoe.so.*.*.*)\" ] && [ -L '$LIBDIR/libsoftmoe.so' ]"
check "installed: static library" "[ -f '$LIBDIR/libsoftmoe.a' ]"
check "installed: pkg-config file" "[ -n '$PC' ]"
check "installed: CMake package" "[ -f '$LIBDIR/cmake/softmoe/softmoeConfig.cmake' ] && [ -f '$LIBDIR/cmake/softmoe/softmoeConfigVersion.cmake' ]"
export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
HV=$(grep -E '#define SMOE_VERSION_(MAJOR|MINOR|PATCH) ' "$T/p/include/softmoe.h" | awk '{print $3}' | paste -sd.)
check "pkg-config --modversion ($(pkg-config --modversion softmoe)) is the header's $HV" "[ \"\$(pkg-config --modversion softmoe)\" = '$HV' ]"
check "pkg-config --static lists the private dependencies" \
    "pkg-config --static --libs softmoe | grep -q -- '-lcjson' && pkg-config --static --libs softmoe | grep -q -- '-lz' && pkg-config --static --libs softmoe | grep -q -- '-lgomp' && pkg-config --static --libs softmoe | grep -q 'openblas'"

# ---- a model and an image ----
MODEL=$SRC/models/fmnist-softmoe.safetensors
if [ ! -f "$MODEL" ]; then
    MODEL=$T/m.safetensors
    "$SOFTMOE" train --device cpu --dim 16 --depth 1 --heads 2 --mlp-dim 16 --patch 7 --moe-layers 0 --experts 2 --slots 1 \
        --batch 64 --train-limit 128 --epochs 1 --eval-limit 64 --out "$MODEL" > "$T/train.log" 2>&1
    check "a tiny model to classify with" "[ -s '$MODEL' ]" || tail -5 "$T/train.log"
fi
DATA=${SOFTMOE_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
IMG=$T/boot.pgm # the first test image, an ankle boot
{ printf 'P5\n28 28\n255\n'; gzip -dc "$DATA/t10k-images-idx3-ubyte.gz" 2> /dev/null | head -c 800 | tail -c 784; } > "$IMG"
check "a test image" "[ \$(wc -c < '$IMG') -eq 797 ]"
"$SOFTMOE" classify --device cpu --model "$MODEL" --top 3 "$IMG" > "$T/want.txt"
check "softmoe classify" "[ \$? -eq 0 ] && grep -q '%' '$T/want.txt'"
echo "  softmoe classify: $(cat "$T/want.txt")"
if [ "$MODEL" = "$SRC/models/fmnist-softmoe.safetensors" ]; then
    check "the shipped model sees an ankle boot" "grep -q '^$IMG: Ankle boot' '$T/want.txt'"
fi

# classify BINARY NAME: runs it on the CPU path and compares with softmoe classify
same() {
    "$1" --device cpu --model "$MODEL" "$IMG" > "$T/got.txt" 2> "$T/err.txt"
    check "$2: runs and prints what softmoe classify prints" "[ \$? -eq 0 ] && cmp -s '$T/want.txt' '$T/got.txt'" \
        || { cat "$T/got.txt" "$T/err.txt"; }
}
linked_shared() {
    lib=$(ldd "$1" | awk '/libsoftmoe\.so/ {print $3}')
    check "$2: linked against the installed libsoftmoe.so (ldd: ${lib:-none})" \
        "[ -n '$lib' ] && [ \"\$(realpath '$lib')\" = \"\$(realpath $LIBDIR/libsoftmoe.so.*.*.*)\" ]"
}
linked_static() { check "$2: linked statically (no libsoftmoe.so)" "! ldd '$1' | grep -q libsoftmoe"; }

# ---- pkg-config, shared ----
$CC $WARN $XCFLAGS -o "$T/classify-shared" "$SRC/examples/classify.c" $(pkg-config --cflags --libs softmoe) \
    -Wl,-rpath,"$LIBDIR" -lm
check "pkg-config shared build" "[ \$? -eq 0 ]"
same "$T/classify-shared" "pkg-config shared"
linked_shared "$T/classify-shared" "pkg-config shared"
"$T/classify-shared" --device vulkan --model "$MODEL" "$IMG" > "$T/vk.txt"
check "pkg-config shared, on Vulkan" "[ \$? -eq 0 ] && grep -q '^$IMG: .*%, .*%, .*%\$' '$T/vk.txt'"
"$T/classify-shared" --device cpu --model "$T/missing.safetensors" "$IMG" > /dev/null 2> "$T/err.txt"
check "a missing model fails with the library's message" "[ \$? -ne 0 ] && grep -q 'SMOE_ERROR_IO' '$T/err.txt'"

# ---- the README's API example, as printed there ----
awk '/^## API/ {api = 1} api && /^```c$/ {on = 1; next} on && /^```$/ {exit} on {print}' "$SRC/README.md" > "$T/readme.c"
$CC $WARN $XCFLAGS -o "$T/readme" "$T/readme.c" $(pkg-config --cflags --libs softmoe) -Wl,-rpath,"$LIBDIR" > "$T/readme.log" 2>&1
check "the README's example builds" "[ \$? -eq 0 ] && [ \$(wc -l < '$T/readme.c') -gt 20 ]" || cat "$T/readme.log"
SOFTMOE_DEVICE=cpu "$T/readme" "$MODEL" "$IMG" > "$T/readme.txt"
check "the README's example prints the top class ($(cat "$T/readme.txt"))" \
    "[ \$? -eq 0 ] && grep -q \"^$IMG: \$(cat '$T/readme.txt') \" '$T/want.txt'"
SOFTMOE_DEVICE=cpu "$T/readme" "$MODEL" "$T/missing.png" > /dev/null 2> "$T/readme.err"
check "the README's example reports a missing image" "[ \$? -eq 1 ] && grep -q 'SMOE_ERROR_IO' '$T/readme.err'"

# ---- pkg-config --static, from a prefix that has only the archive ----
cmake --install "$BUILD" --prefix "$T/s" > /dev/null 2>&1
SLIB=$(dirname "$(dirname "$(find "$T/s" -name softmoe.pc)")")
rm -f "$SLIB"/libsoftmoe.so*
PKG_CONFIG_PATH="$SLIB/pkgconfig" $CC $WARN $XCFLAGS -o "$T/classify-static" "$SRC/examples/classify.c" \
    $(PKG_CONFIG_PATH="$SLIB/pkgconfig" pkg-config --cflags --libs --static softmoe) -lm
check "pkg-config --static build" "[ \$? -eq 0 ]"
same "$T/classify-static" "pkg-config --static"
linked_static "$T/classify-static" "pkg-config --static"

# ---- examples/Makefile, both ways, with both libraries installed ----
mkdir -p "$T/mk" && cp "$SRC/examples/Makefile" "$SRC/examples/classify.c" "$T/mk/"
make -s -C "$T/mk" CFLAGS="-O2 $WARN $XCFLAGS" > "$T/make.log" 2>&1 && mv "$T/mk/classify" "$T/classify-make"
check "make" "[ -x '$T/classify-make' ]" || cat "$T/make.log"
same "$T/classify-make" "make"
linked_shared "$T/classify-make" "make"
make -s -C "$T/mk" STATIC=1 CFLAGS="-O2 $WARN $XCFLAGS" > "$T/make.log" 2>&1 && mv "$T/mk/classify" "$T/classify-make-static"
check "make STATIC=1" "[ -x '$T/classify-make-static' ]" || cat "$T/make.log"
same "$T/classify-make-static" "make STATIC=1"
linked_static "$T/classify-make-static" "make STATIC=1"

# ---- CMake find_package, shared and static ----
for kind in shared static; do
    static=OFF
    [ $kind = static ] && static=ON
    cmake -S "$SRC/examples" -B "$T/ex-$kind" -DCMAKE_PREFIX_PATH="$T/p" -Dsoftmoe_USE_STATIC_LIBS=$static \
        -DCMAKE_C_FLAGS="-Werror $XCFLAGS" > "$T/cmake.log" 2>&1 &&
        cmake --build "$T/ex-$kind" > "$T/cmake-build.log" 2>&1
    check "CMake $kind build" "[ -x '$T/ex-$kind/classify' ]" || cat "$T/cmake.log" "$T/cmake-build.log"
    same "$T/ex-$kind/classify" "CMake $kind"
    linked_$kind "$T/ex-$kind/classify" "CMake $kind"
done
# the version file: this version is found, the next minor one is not (the ABI may change before 1.0)
mkdir -p "$T/ver"
printf 'cmake_minimum_required(VERSION 3.16)\nproject(v LANGUAGES C)\nfind_package(softmoe ${WANT} REQUIRED)\n' > "$T/ver/CMakeLists.txt"
NEXT=$(echo "$HV" | awk -F. '{print $1 "." $2 + 1}')
check "find_package(softmoe $HV) is found" "cmake -S '$T/ver' -B '$T/ver/a' -DCMAKE_PREFIX_PATH='$T/p' -DWANT=$HV > /dev/null 2>&1"
check "find_package(softmoe $NEXT) is not" "! cmake -S '$T/ver' -B '$T/ver/b' -DCMAKE_PREFIX_PATH='$T/p' -DWANT=$NEXT > /dev/null 2>&1"

# ---- a static application that uses volk itself ----
cat > "$T/volk_app.c" << 'APP'
#include <stdio.h>
#include <softmoe.h>
#include <volk.c>
int main(void)
{
    smoe_context *ctx = NULL;
    int n = 0;
    if (smoe_context_create(&ctx) || smoe_device_count(ctx, &n)) return 1;
    smoe_context_destroy(ctx);
    printf("softmoe sees %d devices; volkInitialize: %d\n", n, (int)volkInitialize());
    return n >= 1 ? 0 : 1;
}
APP
DEPS=$(PKG_CONFIG_PATH="$SLIB/pkgconfig" pkg-config --static --libs softmoe | sed 's/-L[^ ]*//; s/-lsoftmoe//')
$CC -std=c11 $XCFLAGS -DVK_NO_PROTOTYPES -I"$VOLK" -I"$T/p/include" -o "$T/volk_app" "$T/volk_app.c" "$SLIB/libsoftmoe.a" \
    $DEPS -ldl > "$T/volk.log" 2>&1
check "an application with volk's own globals links libsoftmoe.a" "[ \$? -eq 0 ]" || cat "$T/volk.log"
check "and runs" "'$T/volk_app' > /dev/null"
$CC -std=c11 $XCFLAGS -DVK_NO_PROTOTYPES -I"$VOLK" -I"$T/p/include" -o "$T/volk_app_raw" "$T/volk_app.c" \
    "$BUILD/libsoftmoe.a" $DEPS -ldl > "$T/volk-raw.log" 2>&1
check "control: the same link against the in-tree archive (globals not localized) clashes" \
    "grep -q 'multiple definition of .vk' '$T/volk-raw.log'"

[ $fail -eq 0 ] && echo "test_install: ok"
exit $fail
