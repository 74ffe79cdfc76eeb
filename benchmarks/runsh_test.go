package benchmarks

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// stubGo stands in for the go command in TestRunSh: it builds a test binary
// that prints $STUB_BENCH and exits with $STUB_BENCH_EXIT, installs a
// benchstat that copies its input (label=file or file), and notes every go
// run in $STUB_LOG, failing if $STUB_CHART_FAILS is set.
const stubGo = `#!/bin/sh
case $1 in
env)
	case $2 in
	GOPATH) echo "$STUB_GOPATH" ;;
	GOBIN) echo "$STUB_GOBIN" ;;
	GOVERSION) echo go1.99 ;;
	esac
	;;
install)
	d=${STUB_GOBIN:-$STUB_GOPATH/bin}
	mkdir -p "$d"
	printf '#!/bin/sh\ncat "${1#*=}"\n' > "$d/benchstat"
	chmod +x "$d/benchstat"
	;;
test)
	printf '#!/bin/sh\nprintf "%%s" "$STUB_BENCH"\nexit ${STUB_BENCH_EXIT:-0}\n' > "$4"
	chmod +x "$4"
	;;
run)
	echo "$*" >> "$STUB_LOG"
	[ -z "$STUB_CHART_FAILS" ] || { echo "chart: refused" >&2; exit 1; }
	;;
esac
`

// machineLine is the line that run.sh leads the results with.
var machineLine = regexp.MustCompile(`(?m)^machine: [^,\n]*[^ ,\n][^,\n]*, [0-9]+ cores, go1\.99$`)

// runLines are the lines that follow it: the date, the rounds, the
// benchtime (run.sh's default) and the load average at the start, which
// the README's table shows beside the machine.
var runLines = regexp.MustCompile(`(?m)^date: [0-9]{4}-[0-9]{2}-[0-9]{2}\ncount: 1\nbenchtime: 500ms\nload: [0-9]+(\.[0-9]+)?$`)

// storageLine is the line that follows them in the store suite's results:
// the file system the stores were on, and its directory.
var storageLine = regexp.MustCompile(`(?m)^storage: ext2/ext3 \(/[^\n]*\)$`)

// TestRunSh runs run.sh with a stub go command and no benchstat on PATH.
func TestRunSh(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("run.sh needs a POSIX shell")
	}
	script, err := os.ReadFile("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	const bench = "BenchmarkStore/Append/eventbus-2 1 100 ns/op\nPASS\n"
	for _, tt := range []struct {
		name  string
		suite string // SUITE, "store" if empty
		bench string // what the benchmarks print
		exit  string // their exit status, 0 if empty
		gobin bool   // whether GOBIN is set
		// noNproc has nproc fail, as where it is missing (macOS).
		noNproc bool
		// chartFails has cmd/chart refuse (a README without the section).
		chartFails bool
		// fs is the file system stat names for the stores' directory,
		// ext2/ext3 (GNU stat's name for ext4) if empty.
		fs string
		ok bool // whether run.sh should succeed and write results
	}{
		// A BENCH that matches nothing (a typing error) must not replace
		// the last results with an empty file.
		{name: "no benchmark matched", bench: "PASS\n", ok: false},
		{name: "benchmarks", bench: bench, ok: true},
		// go install puts benchstat in GOBIN when it is set.
		{name: "GOBIN set", bench: bench, gobin: true, ok: true},
		// One test binary holds both suites: BENCH=Store/Append with
		// SUITE=bus runs store benchmarks, which are not the buses'.
		{name: "other suite's benchmark", suite: "bus", bench: bench, ok: false},
		// The machine line names the cores without GNU's nproc.
		{name: "no nproc", bench: bench, noNproc: true, ok: true},
		// The results, summary and table come from one run or none.
		{name: "chart fails", bench: bench, chartFails: true, ok: false},
		// A benchmark that fails prints FAIL, and the binary exits 1.
		{name: "benchmark fails", bench: "BenchmarkStore/Append/eventbus-2 1 100 ns/op\n" +
			"--- FAIL: BenchmarkStore/Append/bbolt\nFAIL\n", exit: "1", ok: false},
		// On tmpfs an fsync is a no-op: the durable workloads would time
		// appends that reach no disk, in a table that calls them durable.
		{name: "stores on tmpfs", bench: bench, fs: "tmpfs", ok: false},
		{name: "stores on ramfs", bench: bench, fs: "ramfs", ok: false},
		// A panic, or the timeout's, prints no FAIL line: only the exit
		// status says that the results are cut short.
		{name: "benchmarks panic", bench: "BenchmarkStore/Append/eventbus-2 1 100 ns/op\n" +
			"panic: test timed out after 1h0m0s\n", exit: "2", ok: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			stubs, gopath := filepath.Join(dir, "stubs"), filepath.Join(dir, "gopath")
			results := filepath.Join(dir, "results")
			for _, d := range []string{stubs, results} {
				must(os.Mkdir(d, 0o755))
			}
			must(os.WriteFile(filepath.Join(dir, "run.sh"), script, 0o755))
			must(os.WriteFile(filepath.Join(stubs, "go"), []byte(stubGo), 0o755))
			fs := tt.fs
			if fs == "" {
				fs = "ext2/ext3"
			}
			// GNU stat -f -c %T names the file system; whatever the one
			// holding this test's temporary directory is, run.sh sees fs.
			must(os.WriteFile(filepath.Join(stubs, "stat"), []byte("#!/bin/sh\necho '"+fs+"'\n"), 0o755))
			if tt.noNproc {
				must(os.WriteFile(filepath.Join(stubs, "nproc"), []byte("#!/bin/sh\nexit 127\n"), 0o755))
			}
			suite, files := "store", []string{"store.txt", "store-benchstat.txt"}
			if tt.suite == "bus" {
				suite, files = "bus", []string{"bench.txt", "benchstat.txt"}
			}
			old := []byte("old results\n")
			for _, f := range files {
				must(os.WriteFile(filepath.Join(results, f), old, 0o644))
			}
			log := filepath.Join(dir, "go-run.log")
			cmd := exec.Command("sh", filepath.Join(dir, "run.sh"))
			cmd.Env = []string{
				"PATH=" + stubs + string(os.PathListSeparator) + "/usr/bin" + string(os.PathListSeparator) + "/bin",
				"HOME=" + dir, "SUITE=" + suite, "COUNT=1", "BENCH=Store/Append",
				"STUB_GOPATH=" + gopath, "STUB_BENCH=" + tt.bench, "STUB_LOG=" + log,
				"STUB_BENCH_EXIT=" + tt.exit,
			}
			if tt.gobin {
				cmd.Env = append(cmd.Env, "STUB_GOBIN="+filepath.Join(dir, "gobin"))
			}
			if tt.chartFails {
				cmd.Env = append(cmd.Env, "STUB_CHART_FAILS=1")
			}
			out, err := cmd.CombinedOutput()
			if (err == nil) != tt.ok {
				t.Fatalf("run.sh = %v, want success %v; output:\n%s", err, tt.ok, out)
			}
			for _, f := range files {
				got, err := os.ReadFile(filepath.Join(results, f))
				if err != nil {
					t.Fatal(err)
				}
				switch written := !strings.Contains(string(got), string(old)); {
				case tt.ok && (!written || !strings.Contains(string(got), "BenchmarkStore/Append/eventbus-2")):
					t.Errorf("results/%s = %q, want the new results", f, got)
				case !tt.ok && written:
					t.Errorf("results/%s = %q, want the old results kept", f, got)
				case tt.ok && !machineLine.Match(got):
					t.Errorf("results/%s = %q, want a line \"machine: <CPU>, <n> cores, go1.99\"", f, got)
				case tt.ok && !runLines.Match(got):
					t.Errorf("results/%s = %q, want lines \"date: <UTC date>\", \"count: 1\", \"benchtime: 500ms\", \"load: <load average>\"", f, got)
				case tt.ok && suite == "store" && !storageLine.Match(got):
					t.Errorf("results/%s = %q, want a line \"storage: ext2/ext3 (<directory>)\"", f, got)
				}
			}
			charted, _ := os.ReadFile(log)
			if ran := strings.Contains(string(charted), "./cmd/chart"); ran != (tt.ok || tt.chartFails) {
				t.Errorf("run.sh ran cmd/chart: %v, want %v; go run log: %q", ran, tt.ok, charted)
			}
		})
	}
}

// TestRunShCount runs run.sh with a COUNT of no rounds, in every spelling,
// and wants it refused with status 2, as a COUNT that is not a number is:
// "00" ran no round and failed as if BENCH matched no benchmark.
func TestRunShCount(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("run.sh needs a POSIX shell")
	}
	script, err := os.ReadFile("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, count := range []string{"0", "00", "x1", "-1"} {
		dir := t.TempDir()
		stubs := filepath.Join(dir, "stubs")
		must(os.Mkdir(stubs, 0o755))
		must(os.WriteFile(filepath.Join(dir, "run.sh"), script, 0o755))
		must(os.WriteFile(filepath.Join(stubs, "go"), []byte(stubGo), 0o755))
		cmd := exec.Command("sh", filepath.Join(dir, "run.sh"))
		cmd.Env = []string{
			"PATH=" + stubs + string(os.PathListSeparator) + "/usr/bin" + string(os.PathListSeparator) + "/bin",
			"HOME=" + dir, "SUITE=bus", "COUNT=" + count,
			"STUB_GOPATH=" + filepath.Join(dir, "gopath"), "STUB_BENCH=PASS\n",
			"STUB_LOG=" + filepath.Join(dir, "go-run.log"),
		}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "COUNT") {
			t.Errorf("run.sh with COUNT=%s = %v, want status 2 naming COUNT; output:\n%s", count, err, out)
		}
	}
}
