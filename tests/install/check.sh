#!/usr/bin/env bash
# Installs the build in $1 into a scratch prefix under $2, then builds and
# runs a small program against it twice: with find_package(crew) in CMake,
# and with `pkg-config --cflags --libs crew`. This is what a user does.
set -euo pipefail
build=$1
work=$2
rm -rf "$work"
mkdir -p "$work/consumer"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null

cat >"$work/consumer/main.c" <<'C'
#include <crew.h>
#include <stdio.h>
#include <string.h>

static int body(void *arg) {
    crew_lock *lock = arg;
    return crew_lock_acquire(lock, 1.0) == 0 && crew_lock_release(lock) == 0 ? 7 : 1;
}

int main(void) {
    crew_lock lock;
    crew_thread *t;
    int result = 0;
    if (crew_lock_init(&lock, 0) != 0) return 1;
    if (crew_thread_start(&t, body, &lock, NULL) != 0) return 2;
    if (crew_thread_join(t, CREW_FOREVER, &result) != 0 || result != 7) return 3;
    crew_thread_free(t);
    crew_lock_destroy(&lock);
    if (strcmp(crew_version(), CREW_VERSION_STRING) != 0) return 4;
    printf("consumer ok: crew %s\n", crew_version());
    return 0;
}
C
cat >"$work/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(crew 0.1 REQUIRED)
add_executable(consumer_shared main.c)
target_link_libraries(consumer_shared PRIVATE crew::crew)
add_executable(consumer_static main.c)
target_link_libraries(consumer_static PRIVATE crew::crew_static)
CM
cmake -S "$work/consumer" -B "$work/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer/build" >/dev/null
LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" "$work/consumer/build/consumer_shared"
"$work/consumer/build/consumer_static"

libdir=$(find "$prefix" -name crew.pc -printf '%h\n' | head -n1)
flags=$(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs crew)
${CC:-cc} -std=c11 "$work/consumer/main.c" -o "$work/consumer/pc_consumer" $flags
LD_LIBRARY_PATH="$prefix/lib:$(dirname "$libdir"):${LD_LIBRARY_PATH:-}" "$work/consumer/pc_consumer"
echo "install check passed"
