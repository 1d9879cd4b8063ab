#!/bin/sh
# The second Vulkan implementation CI runs the Vulkan tests on: Mesa 25.0 lavapipe from Debian
# bookworm-backports, unpacked (not installed) into DIR together with the backports libdrm it
# needs. The backports source is given only to this script's apt-get (its own source list, package
# lists and cache under DIR): the system's apt sources and its Mesa stay as they are. Writes
# DIR/env.sh, which points the Vulkan loader at the unpacked driver: VK_ICD_FILENAMES at a copy of
# its ICD file whose library_path is the unpacked library (without it the loader would silently
# use the system driver: tests check the driver they got through SOFTMOE_EXPECT_DRIVER), and
# LD_LIBRARY_PATH at the unpacked libdrm.
#   tools/mesa-backports.sh build/mesa-25 && . build/mesa-25/env.sh
set -eu
[ $# -eq 1 ] || { echo "usage: tools/mesa-backports.sh DIR" >&2; exit 2; }
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
SUITE=bookworm-backports
PKGS="mesa-vulkan-drivers/$SUITE libdrm2/$SUITE libdrm-amdgpu1/$SUITE"
mkdir -p "$DIR/apt/sources" "$DIR/apt/lists/partial" "$DIR/apt/cache/archives/partial" "$DIR/debs"
cat > "$DIR/apt/sources/backports.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
APT="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$DIR/apt/sources -o Dir::State::Lists=$DIR/apt/lists
     -o Dir::Cache=$DIR/apt/cache -o Debug::NoLocking=1"
# as root apt would hand the downloads to its _apt user, who cannot write into DIR
[ "$(id -u)" -ne 0 ] || APT="$APT -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get $APT -qq update
# shellcheck disable=SC2086
(cd "$DIR/debs" && apt-get $APT -qq download $PKGS)
rm -rf "$DIR/root"
mkdir -p "$DIR/root"
for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$DIR/root"; done
LIB="$DIR/root/usr/lib/x86_64-linux-gnu"
[ -f "$LIB/libvulkan_lvp.so" ] || { echo "mesa-backports: no libvulkan_lvp.so in the unpacked packages" >&2; exit 1; }
sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$LIB/libvulkan_lvp.so\"|" \
    "$DIR/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$DIR/lvp_icd.json"
grep -q "\"library_path\": \"$LIB/libvulkan_lvp.so\"" "$DIR/lvp_icd.json" ||
    { echo "mesa-backports: could not point the ICD file at the unpacked library" >&2; exit 1; }
VERSION=$(dpkg-deb -f "$DIR"/debs/mesa-vulkan-drivers_*.deb Version)
cat > "$DIR/env.sh" <<ENV
# Mesa $VERSION lavapipe, unpacked by tools/mesa-backports.sh
export VK_ICD_FILENAMES="$DIR/lvp_icd.json"
export LD_LIBRARY_PATH="$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export SOFTMOE_EXPECT_DRIVER="Mesa ${VERSION%%-*}"
ENV
echo "mesa-backports: Mesa $VERSION lavapipe in $DIR (. $DIR/env.sh)"
