#!/usr/bin/env bash
# Installs, by Debian package name, whatever crew's build, tests and demo need
# and this machine lacks. Safe to run again: it installs only what is missing.
set -euo pipefail

# package -> a file or command that proves it is there
need=(
  "cmake:cmd:cmake"
  "make:cmd:make"
  "gcc:cmd:gcc"
  "clang:cmd:clang"
  "pkgconf:cmd:pkg-config"
  "libcmocka-dev:file:/usr/include/cmocka.h"
  "libsodium-dev:file:/usr/include/sodium.h"
  "python3:cmd:python3"
  "libclang-rt-dev:glob:/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.tsan-*.a"
  "libomp-dev:glob:/usr/lib/llvm-*/lib/libomp.so"
  "g++:cmd:g++"
  "libtbb-dev:file:/usr/include/oneapi/tbb.h"
)

missing=()
for entry in "${need[@]}"; do
  pkg=${entry%%:*}; rest=${entry#*:}; kind=${rest%%:*}; what=${rest#*:}
  case $kind in
    cmd)  command -v "$what" >/dev/null 2>&1 || missing+=("$pkg") ;;
    file) [ -e "$what" ] || missing+=("$pkg") ;;
    glob) compgen -G "$what" >/dev/null || missing+=("$pkg") ;;
  esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
