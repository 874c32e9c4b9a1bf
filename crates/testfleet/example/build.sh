#!/bin/sh
# "Compiles" the word counter: installs it into build/ with the configured awk.
set -eu
. ./build/config.mk
sed "s|@AWK@|$AWK|" src/wordcount.in > build/wordcount
chmod +x build/wordcount
echo "build: build/wordcount"
