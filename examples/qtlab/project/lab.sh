#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# The lab example's steps, as the job template runs them in the checkout:
#
#   sh lab.sh configure   cmake -S . -B build (Release)
#   sh lab.sh build       cmake --build build
#   sh lab.sh test        every build/tst_bench_* with QtTest's CPU tick counter,
#                         writing results/<program>.xml (for testfleet) and
#                         results/<program>.txt (for people)
#
# Environment (all optional):
#   QTLAB_BENCH_ARGS   QtTest options for every program
#                      (default: -tickcounter -iterations 500 -median 5: CPU ticks,
#                      what a prepared lab host measures). `-callgrind` counts
#                      instructions under valgrind instead: about 50 times slower
#                      and blind to caches and memory, but the same on every run
#                      whatever else the machine does (CI, a shared machine).
#   QTLAB_JOBS         parallel build jobs (default: 2)
#   QTLAB_MACHINE_LOCK a lock file that build and test hold (flock(1)): when several
#                      agents share one machine (a loopback test, a developer's box),
#                      their builds and benchmark runs then take turns instead of
#                      disturbing each other. A lab with one agent per machine leaves it
#                      unset.
set -eu

if [ -n "${QTLAB_MACHINE_LOCK:-}" ] && [ -z "${QTLAB_LOCKED:-}" ]; then
    case "${1:-}" in
    build | test)
        QTLAB_LOCKED=1 exec flock "$QTLAB_MACHINE_LOCK" sh "$0" "$@"
        ;;
    esac
fi

case "${1:-}" in
configure)
    exec cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
    ;;
build)
    exec cmake --build build -j"${QTLAB_JOBS:-2}"
    ;;
test)
    args=${QTLAB_BENCH_ARGS:--tickcounter -iterations 500 -median 5}
    mkdir -p results
    found=0
    status=0
    for exe in build/tst_bench_*; do
        [ -x "$exe" ] && [ -f "$exe" ] || continue
        found=1
        name=$(basename "$exe")
        # shellcheck disable=SC2086 # the options are several words
        "$exe" $args -o "results/$name.xml,xml" -o "results/$name.txt,txt" || status=$?
    done
    if [ "$found" = 0 ]; then
        echo "lab.sh: no build/tst_bench_* programs: run 'sh lab.sh build' first" >&2
        exit 2
    fi
    exit "$status"
    ;;
*)
    echo "usage: sh lab.sh configure|build|test" >&2
    exit 2
    ;;
esac
