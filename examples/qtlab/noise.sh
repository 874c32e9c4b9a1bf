#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Measures how much the lab example's benchmark values move from run to run
# on this machine, with and without each step of the controlled environment
# that a process can take for itself (docs/lab.md, "What each step buys").
#
#   sh examples/qtlab/noise.sh BUILD_DIR [RUNS] [CPU]
#
# BUILD_DIR holds the built tst_bench_* (`sh lab.sh configure && sh lab.sh build`
# in a checkout). Each variant runs every program RUNS times (default 10); for
# each benchmark row the run-to-run coefficient of variation (standard
# deviation / mean) is computed, and the variant's line gives the median and
# the largest over the rows, and how many rows moved by more than 2 % (the
# comparison's default effect floor) between their lowest and highest run.
# CPU (default 1) is the core the pinned variants use. `nice -n -5` and
# `chrt` need root (or CAP_SYS_NICE); without it those variants say so.
set -eu

if [ $# -lt 1 ]; then
    echo "usage: sh noise.sh BUILD_DIR [RUNS] [CPU]" >&2
    exit 2
fi
build=$1
runs=${2:-10}
cpu=${3:-1}
ticks="-tickcounter -iterations 500 -median 5"
arch=$(uname -m)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# variant NAME QTEST-OPTIONS PREFIX...: one line of the table.
variant() {
    name=$1
    opts=$2
    shift 2
    if ! "$@" true 2>/dev/null; then
        printf '%-34s not possible here (%s)\n' "$name" "$*"
        return
    fi
    : >"$tmp/values"
    i=0
    while [ "$i" -lt "$runs" ]; do
        for exe in "$build"/tst_bench_*; do
            # shellcheck disable=SC2086 # the options are several words
            "$@" "$exe" $opts -o -,csv 2>/dev/null |
                awk -F, -v p="$(basename "$exe")" \
                    '$3 == "\"CPUTicks\"" || $3 == "\"InstructionReads\"" { print p "/" $1 "/" $2, $4 }' \
                    >>"$tmp/values"
        done
        i=$((i + 1))
    done
    awk -v name="$name" '
        { n[$1]++; s[$1] += $2; ss[$1] += $2 * $2
          if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2
          if (!($1 in hi) || $2 > hi[$1]) hi[$1] = $2 }
        END {
            rows = 0; over = 0
            for (k in n) {
                m = s[k] / n[k]; v = (ss[k] - n[k] * m * m) / (n[k] - 1)
                cv[++rows] = (v > 0 ? sqrt(v) : 0) / m
                if ((hi[k] - lo[k]) / m > 0.02) over++
            }
            # insertion sort, for the median
            for (i = 2; i <= rows; i++) { x = cv[i]; j = i - 1
                while (j > 0 && cv[j] > x) { cv[j + 1] = cv[j]; j-- } cv[j + 1] = x }
            med = rows % 2 ? cv[(rows + 1) / 2] : (cv[rows / 2] + cv[rows / 2 + 1]) / 2
            printf "%-34s cv median %5.2f %%  max %6.2f %%  rows > 2 %% apart: %d of %d\n",
                name, 100 * med, 100 * cv[rows], over, rows
        }' "$tmp/values"
}

echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg), $runs runs a variant"
variant "ticks, nothing" "$ticks" env
variant "ticks, taskset -c $cpu" "$ticks" taskset -c "$cpu"
variant "ticks, taskset + nice -n -5" "$ticks" taskset -c "$cpu" nice -n -5
variant "ticks, taskset + chrt -f 50" "$ticks" taskset -c "$cpu" chrt -f 50
variant "ticks, taskset + ASLR off" "$ticks" taskset -c "$cpu" setarch "$arch" -R
variant "ticks, all of the above" "$ticks" taskset -c "$cpu" chrt -f 50 setarch "$arch" -R
variant "instructions (-callgrind)" "-callgrind" env
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
