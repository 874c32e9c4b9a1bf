#!/bin/sh
# Unit tests of build/wordcount, reported as TAP 13 in results/unit.tap.
set -u
mkdir -p results
out=results/unit.tap
n=0
fails=0
check() { # name expected actual
  n=$((n + 1))
  if [ "$2" = "$3" ]; then
    echo "ok $n - $1" >> "$out"
  else
    fails=$((fails + 1))
    { echo "not ok $n - $1"; echo "  ---"; echo "  expected: '$2'"; echo "  got: '$3'"; echo "  ..."; } >> "$out"
  fi
}
echo "TAP version 13" > "$out"
check "counts a single word" "1 hello" "$(echo hello | build/wordcount)"
check "is case insensitive" "2 hello" "$(echo 'Hello hello' | build/wordcount)"
check "orders by frequency" "3 b" "$(echo 'a b b c b' | build/wordcount 1)"
check "ignores punctuation" "2 word" "$(echo 'word, word.' | build/wordcount)"
check "empty input gives nothing" "" "$(printf '' | build/wordcount)"
check "limits the output" "2" "$(echo 'a b c' | build/wordcount 2 | wc -l | tr -d ' ')"
echo "1..$n" >> "$out"
cat "$out"
echo "$((n - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
