#!/bin/sh
# Times build/wordcount on generated text and writes Google Benchmark JSON to
# results/bench.json (real_time per iteration, in milliseconds).
set -eu
mkdir -p results build
gen() { # words
  awk -v n="$1" 'BEGIN { srand(7); for (i = 0; i < n; i++) printf "w%d%s", int(rand() * 500), (i % 12 == 11 ? "\n" : " ") }'
}
now_ns() { date +%s%N; }
entries=""
for size in 1000 20000; do
  gen "$size" > "build/input-$size.txt"
  iterations=5
  start=$(now_ns)
  i=0
  while [ "$i" -lt "$iterations" ]; do
    build/wordcount 10 < "build/input-$size.txt" > /dev/null
    i=$((i + 1))
  done
  end=$(now_ns)
  per_ms=$(awk -v s="$start" -v e="$end" -v it="$iterations" 'BEGIN { printf "%.3f", (e - s) / it / 1e6 }')
  echo "BM_WordCount/$size: $per_ms ms per iteration ($iterations iterations)"
  [ -n "$entries" ] && entries="$entries,"
  entries="$entries
    {\"name\": \"BM_WordCount/$size\", \"family_index\": 0, \"per_family_instance_index\": 0,
     \"run_name\": \"BM_WordCount/$size\", \"run_type\": \"iteration\", \"repetitions\": 1,
     \"repetition_index\": 0, \"threads\": 1, \"iterations\": $iterations,
     \"real_time\": $per_ms, \"cpu_time\": $per_ms, \"time_unit\": \"ms\"}"
done
cat > results/bench.json <<JSON
{
  "context": {"date": "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)", "host_name": "$(hostname)", "executable": "build/wordcount",
              "num_cpus": $(nproc), "library_build_type": "release"},
  "benchmarks": [$entries
  ]
}
JSON
echo "bench: results/bench.json"
