#!/bin/sh
# Installs what softmoe builds and tests with, from Debian packages only (clang-14 with its
# libFuzzer and sanitizer runtimes and OpenMP only for the fuzz build). Idempotent; uses sudo
# when not run as root.
set -eu
PKGS="build-essential cmake pkg-config libvulkan-dev libvulkan-volk-dev glslang-tools mesa-vulkan-drivers
vulkan-validationlayers spirv-tools libopenblas-dev libopenblas-openmp-dev libcjson-dev libstb-dev zlib1g-dev dataset-fashion-mnist
clang-14 libclang-rt-14-dev libomp-14-dev"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
