#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Creates the lab example's git repository: two integrations of project/ on
# branch `dev`, the second one making one benchmark (tst_bench_codec's
# checksum) do 10 % more work (integration-2.patch: one more mixing round).
#
#   sh examples/qtlab/make-repo.sh DIR [PROJECT]
#
# makes DIR/PROJECT.git (PROJECT defaults to qt/qtlab), which the template
# clones as {{git_base}}/{{project}}.git with git_base = DIR, and prints the
# two commits, one per line: integration 1, then integration 2. Dates and
# names are fixed, so the commits are the same on every machine.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: sh make-repo.sh DIR [PROJECT]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
repo="$1/${2:-qt/qtlab}.git"
if [ -e "$repo" ]; then
    echo "make-repo.sh: $repo exists already; remove it or choose another DIR" >&2
    exit 1
fi
mkdir -p "$repo"

export GIT_AUTHOR_NAME="Jane Developer" GIT_AUTHOR_EMAIL="jane@example.org"
export GIT_COMMITTER_NAME="Qt CI Bot" GIT_COMMITTER_EMAIL="qt_ci_bot@qt-project.org"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null

cd "$repo"
git init -q --initial-branch=dev
cp "$here/project/CMakeLists.txt" "$here/project/lab.sh" "$here"/project/tst_bench_*.cpp .
git add .
GIT_AUTHOR_DATE="2026-01-05T09:00:00Z" GIT_COMMITTER_DATE="2026-01-05T09:00:00Z" \
    git commit -q -m "Add the lab's benchmarks: strings, containers and codec"
git rev-parse HEAD

git apply "$here/integration-2.patch"
git add .
GIT_AUTHOR_DATE="2026-01-06T09:00:00Z" GIT_COMMITTER_DATE="2026-01-06T09:00:00Z" \
    git commit -q -m "Codec: one more mixing round in checksum()

Short inputs spread better over the hash space."
git rev-parse HEAD
