#!/bin/sh
# run.sh runs every benchmark of this module COUNT times and writes, in
# results/: bench.txt (the machine, then the raw go test output),
# benchstat.txt (benchstat's summary), one SVG chart per workload, and the
# median table in README.md. Environment: COUNT (default 6), BENCHTIME
# (default 500ms), BENCH (a -bench pattern, default all).
set -eu
cd "$(dirname "$0")"
COUNT=${COUNT:-6}
BENCHTIME=${BENCHTIME:-500ms}
BENCH=${BENCH:-.}

benchstat=$(command -v benchstat || echo "$(go env GOPATH)/bin/benchstat")
if [ ! -x "$benchstat" ]; then
	go install golang.org/x/perf/cmd/benchstat@latest
fi

mkdir -p results
{
	# "key: value" lines before the benchmarks are configuration to benchstat.
	echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(go env GOVERSION)"
	echo "date: $(date -u +%Y-%m-%d)"
	echo "count: $COUNT"
	echo "benchtime: $BENCHTIME"
	# Other work on the machine skews the figures; say how busy it was.
	echo "load: $(cut -d' ' -f1 /proc/loadavg)"
	go test -run '^$' -bench "$BENCH" -count "$COUNT" -benchtime "$BENCHTIME" -benchmem .
} | tee results/bench.txt.tmp
mv results/bench.txt.tmp results/bench.txt
"$benchstat" results/bench.txt > results/benchstat.txt
go run ./cmd/chart -in results/bench.txt -out results -readme README.md
