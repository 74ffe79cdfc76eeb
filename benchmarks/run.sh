#!/bin/sh
# run.sh runs the benchmarks of this module in COUNT rounds and writes, in
# results/, for each suite it runs: the machine (and, for the stores, the
# file system of TMPDIR, where they are made) and the raw go test output
# (bench.txt for the buses, store.txt for the stores), benchstat's summary
# (benchstat.txt, store-benchstat.txt), one SVG chart per workload, and
# the suite's median table in README.md. Environment: SUITE (bus, store or
# all, the default), COUNT (default 6), BENCHTIME (default 500ms), BENCH
# (a -bench pattern within one SUITE, default the whole suite; the suite's
# files then hold the workloads it matches alone).
set -eu
cd "$(dirname "$0")"
SUITE=${SUITE:-all}
COUNT=${COUNT:-6}
BENCHTIME=${BENCHTIME:-500ms}
BENCH=${BENCH:-}

# Digits only, and not all zeros: "00" would run no round.
case $COUNT in
'' | *[!0-9]*) count_ok=false ;;
*) if [ "$COUNT" -ge 1 ] 2>/dev/null; then count_ok=true; else count_ok=false; fi ;;
esac
if [ "$count_ok" = false ]; then
	echo "run.sh: COUNT is a number of rounds, at least 1, not $COUNT" >&2
	exit 2
fi

case $SUITE in
bus | store) ;;
all)
	if [ -n "$BENCH" ]; then
		echo "run.sh: BENCH needs SUITE=bus or SUITE=store" >&2
		exit 2
	fi
	;;
*)
	echo "run.sh: SUITE is bus, store or all, not $SUITE" >&2
	exit 2
	;;
esac

# Where go install puts benchstat: GOBIN, or the first GOPATH entry's bin.
gobin=$(go env GOBIN)
if [ -z "$gobin" ]; then
	gobin=$(go env GOPATH | cut -d: -f1)/bin
fi
benchstat=$(command -v benchstat || echo "$gobin/benchstat")
if [ ! -x "$benchstat" ]; then
	go install golang.org/x/perf/cmd/benchstat@latest
fi

# The machine, on Linux or macOS (sysctl), else what is known of it.
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//')
if [ -z "$cpu" ]; then
	cpu=$(sysctl -n machdep.cpu.brand_string 2>/dev/null || uname -m)
fi
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo '?')
loadavg() {
	cut -d' ' -f1 /proc/loadavg 2>/dev/null ||
		sysctl -n vm.loadavg 2>/dev/null | awk '{ print $2 }'
}

# The file system the store suite's stores are on: go test makes them in
# TMPDIR, or /tmp. GNU stat names it; elsewhere it is unknown.
tmp=${TMPDIR:-/tmp}
storage=$(stat -f -c %T "$tmp" 2>/dev/null) || storage=unknown
# An fsync on tmpfs or ramfs (memory) is a no-op: the durable workloads
# would time appends that reach no disk. Refused before any suite runs.
if [ "$SUITE" != bus ]; then
	case $storage in
	tmpfs | ramfs)
		echo "run.sh: $tmp is on $storage, where fsync writes nothing to a disk: set TMPDIR to a directory on one; results/ is unchanged" >&2
		exit 1
		;;
	esac
fi

# suite name pattern output benchstat-output readme-section
suite() {
	if [ "$SUITE" != all ] && [ "$SUITE" != "$1" ]; then
		return
	fi
	mkdir -p results
	bin=$(mktemp -d)
	trap 'rm -rf "$bin"' EXIT
	go test -c -o "$bin/bench.test" .
	{
		# "key: value" lines before the benchmarks are configuration to benchstat.
		echo "machine: $cpu, $cores cores, $(go env GOVERSION)"
		echo "date: $(date -u +%Y-%m-%d)"
		echo "count: $COUNT"
		echo "benchtime: $BENCHTIME"
		# Other work on the machine skews the figures; say how busy it was.
		echo "load: $(loadavg)"
		if [ "$1" = store ]; then
			echo "storage: $storage ($tmp)"
		fi
		# COUNT rounds of one run of each benchmark, rather than COUNT runs
		# of one benchmark after another: a burst of other work on the
		# machine then spreads over the peers instead of falling on one.
		i=0
		while [ "$i" -lt "$COUNT" ]; do
			# A panic or a timeout prints no FAIL line of its own.
			"$bin/bench.test" -test.run '^$' -test.timeout 1h -test.bench "${BENCH:-$2}" -test.count 1 -test.benchtime "$BENCHTIME" -test.benchmem ||
				{ echo "FAIL: round $((i + 1)): the benchmarks exited with status $?"; exit 1; }
			i=$((i + 1))
		done
	} | tee "$3.tmp"
	rm -rf "$bin"
	# tee hides go test's exit status; its output does not.
	if grep -q '^FAIL' "$3.tmp"; then
		echo "run.sh: benchmarks failed; $3 is unchanged" >&2
		exit 1
	fi
	# A BENCH that matches nothing runs nothing and passes.
	if ! grep -q '^Benchmark' "$3.tmp"; then
		echo "run.sh: no benchmark matches ${BENCH:-$2}; $3 is unchanged" >&2
		exit 1
	fi
	# The test binary holds both suites, and BENCH runs whatever it matches.
	if awk '/^Benchmark/ { print $1 }' "$3.tmp" | cut -d/ -f1 | sed 's/-[0-9]*$//' | grep -Evq "$2"; then
		echo "run.sh: BENCH=$BENCH runs benchmarks of another suite than $1; $3 is unchanged" >&2
		exit 1
	fi
	# The summary, charts and table are made before the results file is
	# replaced, so that all of them come from this run or none does:
	# cmd/chart writes nothing when it refuses.
	"$benchstat" "$3=$3.tmp" > "$4.tmp"
	go run ./cmd/chart -in "$3.tmp" -out results -readme README.md -section "$5" ||
		{ echo "run.sh: cmd/chart failed; $3 and $4 are unchanged" >&2; exit 1; }
	mv "$3.tmp" "$3"
	mv "$4.tmp" "$4"
}

suite bus '^Benchmark(OneSubscriber|TenSubscribers|Keyed|IdleLatency)$' results/bench.txt results/benchstat.txt results
suite store '^BenchmarkStore$' results/store.txt results/store-benchstat.txt store-results
