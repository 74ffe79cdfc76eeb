package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const sample = `machine: Test CPU, 2 cores, go1.26.0
count: 3
goos: linux
pkg: github.com/seed-a6f1faae/eventbus/benchmarks
BenchmarkFan/fast-2   	100	 10 ns/op	 1.0 ns/delivery	 0 B/op	 0 allocs/op
BenchmarkFan/fast-2   	100	 30 ns/op	 3.0 ns/delivery	 0 B/op	 0 allocs/op
BenchmarkFan/fast-2   	100	 20 ns/op	 2.0 ns/delivery	 0 B/op	 0 allocs/op
BenchmarkFan/slow-ack-2	100	 9000 ns/op	 900 ns/delivery	 10 B/op	 3 allocs/op
BenchmarkKeyed/fast-2 	100	 50 ns/op	 0 violations/event	 0 B/op	 0 allocs/op
BenchmarkKeyed/slow-ack-2	100	 60 ns/op	 0.25 violations/event	 8 B/op	 1 allocs/op
BenchmarkKeyed/slow-ack-2	100	 80 ns/op	 0 violations/event	 8 B/op	 1 allocs/op
BenchmarkStore/Append/fast-2	100	 90 ns/op	 11111111 events/s	 8 B/op	 1 allocs/op
PASS
`

func TestParseMedian(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got, want := strings.Join(res.workloads, ","), "Fan,Keyed,Store/Append"; got != want {
		t.Errorf("workloads = %s, want %s", got, want)
	}
	if got, want := strings.Join(res.peers, ","), "fast,slow-ack"; got != want {
		t.Errorf("peers = %s, want %s", got, want)
	}
	tests := []struct {
		c    cell
		unit string
		want float64
	}{
		{cell{"Fan", "fast"}, "ns/op", 20},
		{cell{"Fan", "fast"}, "ns/delivery", 2},
		{cell{"Keyed", "slow-ack"}, "ns/op", 70},
		{cell{"Store/Append", "fast"}, "ns/op", 90},
	}
	for _, tt := range tests {
		if got, ok := res.median(tt.c, tt.unit); !ok || got != tt.want {
			t.Errorf("median(%v, %s) = %v, %v, want %v, true", tt.c, tt.unit, got, ok, tt.want)
		}
	}
	if got, want := res.unit("Fan"), "ns/delivery"; got != want {
		t.Errorf("unit(Fan) = %s, want %s", got, want)
	}
	if got, want := res.orderText(cell{"Keyed", "slow-ack"}), "no (25% of events)"; got != want {
		t.Errorf("orderText = %q, want %q", got, want)
	}
	if got, want := res.orderText(cell{"Keyed", "fast"}), "yes"; got != want {
		t.Errorf("orderText = %q, want %q", got, want)
	}
	// Fan-out is timed per delivery, but allocations are counted per event.
	if table := res.table(t.TempDir()); !strings.Contains(table, "ns/delivery | allocs/event |") {
		t.Errorf("table header does not label fan-out's allocations per event:\n%s", table)
	}
}

// TestMissingCell charts a workload that one peer did not run (the store
// peers that only append, in the read workloads): its table cells are "–",
// not a zero that reads as a measurement, and its chart has no bar for it.
func TestMissingCell(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	table := res.table("results")
	if want := "| slow-ack | 900 | 3 | 70 | 1 | no (25% of events) | – | – |\n"; !strings.Contains(table, want) {
		t.Errorf("table has no row %q:\n%s", want, table)
	}
	if svg := res.chart("Store/Append"); bytes.Contains(svg, []byte(">slow-ack<")) {
		t.Errorf("chart(Store/Append) has a bar for slow-ack, which did not run it:\n%s", svg)
	}
}

// TestOrderTextShare reads the share of events out of order as go test
// prints violations/event, from every event (a peer delivering each twice)
// down to a few in ten million, and wants it in plain decimals, as the
// table's other figures are, never in exponent form ("1e+02%").
func TestOrderTextShare(t *testing.T) {
	for _, tt := range []struct{ violations, want string }{
		{"1.000", "no (100% of events)"},
		{"0.6667", "no (67% of events)"},
		{"0.02637", "no (2.6% of events)"},
		{"0.001000", "no (0.1% of events)"},
		{"0.0000003", "no (0.00003% of events)"},
		{"0.0000025", "no (0.00025% of events)"},
	} {
		res, err := parse(strings.NewReader("BenchmarkKeyed/p-2 100 50 ns/op " + tt.violations + " violations/event\n"))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if got := res.orderText(cell{"Keyed", "p"}); got != tt.want {
			t.Errorf("orderText(%s violations/event) = %q, want %q", tt.violations, got, tt.want)
		}
	}
}

// TestOrderTextRareViolation reads a keyed run of 40 million events, one
// of which came after a later one of its key, as go test prints it: the
// share, to seven decimals, is 0, and the count, violations, is 1. The
// table must say that order was lost, not "yes".
func TestOrderTextRareViolation(t *testing.T) {
	res, err := parse(strings.NewReader(
		"BenchmarkKeyed/p-2 40000000 30 ns/op 1.000 violations 0.0000000 violations/event\n" +
			"BenchmarkKeyed/p-2 40000000 30 ns/op 0 violations 0 violations/event\n"))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got, want := res.orderText(cell{"Keyed", "p"}), "no (0.0000025% of events)"; got != want {
		t.Errorf("orderText(1 violation in 40,000,000 events) = %q, want %q", got, want)
	}
}

// TestMachineGOMAXPROCS charts runs whose GOMAXPROCS, in their names, is
// not the machine line's cores (run under taskset -c 0, or in a container
// with a CPU quota, on a 2-core machine), and wants the table and charts
// to say it, since the names' suffix is left out of both; where the two
// agree, the machine line is enough.
func TestMachineGOMAXPROCS(t *testing.T) {
	const machine = "machine: Test CPU, 2 cores, go1.26.0\n"
	for _, tt := range []struct {
		name, results, want string
	}{
		// go test names no suffix for GOMAXPROCS 1.
		{"taskset -c 0", "BenchmarkKeyed/p 100 50 ns/op\n", "Test CPU, 2 cores, go1.26.0 (GOMAXPROCS 1)"},
		{"12 of 2", "BenchmarkKeyed/p-12 100 50 ns/op\n", "Test CPU, 2 cores, go1.26.0 (GOMAXPROCS 12)"},
		{"all cores", "BenchmarkKeyed/p-2 100 50 ns/op\n", "Test CPU, 2 cores, go1.26.0"},
		// go test's own cpu line names no cores.
		{"no machine line", "cpu: Test CPU\nBenchmarkKeyed/p-2 100 50 ns/op\n", "Test CPU (GOMAXPROCS 2)"},
	} {
		in := machine + tt.results
		if tt.name == "no machine line" {
			in = tt.results
		}
		res, err := parse(strings.NewReader(in))
		if err != nil {
			t.Fatalf("%s: parse: %v", tt.name, err)
		}
		if table := res.table("results"); !strings.Contains(table, "Machine: "+tt.want+".\n") {
			t.Errorf("%s: table does not begin \"Machine: %s.\":\n%s", tt.name, tt.want, table)
		}
		if svg := res.chart("Keyed"); !bytes.Contains(svg, []byte("; "+tt.want+"</text>")) {
			t.Errorf("%s: chart does not name the machine as %q", tt.name, tt.want)
		}
	}
}

// TestMachineStorage charts store results whose run.sh header names the
// file system the stores were on, and wants the table and charts to say
// it: a durable append's figure means nothing without its disk.
func TestMachineStorage(t *testing.T) {
	res, err := parse(strings.NewReader("machine: Test CPU, 2 cores, go1.26.0\n" +
		"load: 0.5\nstorage: ext2/ext3 (/tmp)\nBenchmarkStore/Append/p-2 100 50 ns/op\n"))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	const want = "Test CPU, 2 cores, go1.26.0 (load 0.5, storage ext2/ext3 (/tmp))"
	if table := res.table("results"); !strings.Contains(table, "Machine: "+want+".\n") {
		t.Errorf("table does not begin \"Machine: %s.\":\n%s", want, table)
	}
	if svg := res.chart("Store/Append"); !bytes.Contains(svg, []byte("; "+want+"</text>")) {
		t.Errorf("chart does not name the machine as %q:\n%s", want, svg)
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", "BenchmarkNoPeer-2 100 5 ns/op\n", "Benchmark/b-2 100 5 ns/op\n", "BenchmarkA/b-2 100 x ns/op\n",
		// -cpu 1,2: two GOMAXPROCS, whose samples one median would mix.
		"BenchmarkA/b 100 5 ns/op\nBenchmarkA/b-2 100 9 ns/op\n",
		"BenchmarkA/b-2 100 5 ns/op\nBenchmarkA/c-4 100 9 ns/op\n"} {
		if _, err := parse(strings.NewReader(in)); err == nil {
			t.Errorf("parse(%q) = nil error, want one", in)
		}
	}
}

func TestChart(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for _, tt := range []struct {
		workload string
		log      bool
	}{{"Fan", true}, {"Keyed", false}} {
		svg := res.chart(tt.workload)
		checkXML(t, svg)
		if got := bytes.Contains(svg, []byte("log scale")); got != tt.log {
			t.Errorf("chart(%s) log scale = %v, want %v", tt.workload, got, tt.log)
		}
		if !bytes.Contains(svg, []byte(">slow-ack<")) {
			t.Errorf("chart(%s) has no bar label for slow-ack", tt.workload)
		}
	}
}

// TestChartZero draws workloads whose medians are zero, all or some (a
// floor too fast for the clock): every peer keeps its bar, and no
// coordinate is NaN.
func TestChartZero(t *testing.T) {
	res, err := parse(strings.NewReader(`BenchmarkNone/a-2 100 0 ns/op
BenchmarkNone/b-2 100 0 ns/op
BenchmarkSome/a-2 100 0 ns/op
BenchmarkSome/b-2 100 900 ns/op
BenchmarkSome/c-2 100 3 ns/op
`))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for _, w := range res.workloads {
		svg := res.chart(w)
		checkXML(t, svg)
		if bytes.Contains(svg, []byte("NaN")) || bytes.Contains(svg, []byte("Inf")) {
			t.Errorf("chart(%s) has a coordinate that is not a number:\n%s", w, svg)
		}
		for _, p := range res.peers {
			if _, ok := res.median(cell{w, p}, "ns/op"); ok && !bytes.Contains(svg, []byte(">"+p+"<")) {
				t.Errorf("chart(%s) has no bar for %s, whose median is in the table:\n%s", w, p, svg)
			}
		}
	}
}

// TestChartLogScaleSmallestBar draws log-scale charts whose smallest bar is
// at or just past a power of ten, where the axis began, and wants that bar
// long enough to read, not a sliver like a zero's.
func TestChartLogScaleSmallestBar(t *testing.T) {
	for _, smallest := range []string{"10", "10.3", "18", "0.1", "30"} {
		res, err := parse(strings.NewReader("BenchmarkW/small-2 100 " + smallest + " ns/op\n" +
			"BenchmarkW/large-2 100 1000 ns/op\n"))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		svg := res.chart("W")
		if !bytes.Contains(svg, []byte("log scale")) {
			t.Fatalf("chart(%s ns, 1000 ns) is not on a log scale", smallest)
		}
		w := barWidths(t, svg)
		if len(w) != 2 || w[0] < w[1]/20 {
			t.Errorf("chart(%s ns, 1000 ns) bar widths = %v, want the first at least 1/20 of the second", smallest, w)
		}
	}
}

var barWidth = regexp.MustCompile(`<rect x="[0-9.]+" y="[0-9.]+" width="([0-9.]+)"`)

// barWidths returns the widths of a chart's bars, top to bottom.
func barWidths(t *testing.T, svg []byte) []float64 {
	t.Helper()
	var ws []float64
	for _, m := range barWidth.FindAllSubmatch(svg, -1) {
		w, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	return ws
}

func checkXML(t *testing.T, doc []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(doc))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, doc)
		}
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "a\n<!-- results:begin -->\nold\n<!-- results:end -->\n" +
		"<!-- store:begin -->\nold store\n<!-- store:end -->\nz\n"
	got, err := replaceSection([]byte(doc), "store", "new\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "a\n<!-- results:begin -->\nold\n<!-- results:end -->\n" +
		"<!-- store:begin -->\nnew\n<!-- store:end -->\nz\n"
	if string(got) != want {
		t.Errorf("replaceSection(store) = %q, want %q", got, want)
	}
	for _, section := range []string{"other", "result"} {
		if _, err := replaceSection([]byte(doc), section, "x"); err == nil {
			t.Errorf("replaceSection(%s) without its marks = nil error, want one", section)
		}
	}
}

// TestRunSectionMissing runs the command on a README without the section
// named and wants an error and no chart written, so that the charts and
// the README's table never come from two runs.
func TestRunSectionMissing(t *testing.T) {
	dir := t.TempDir()
	in, readme := filepath.Join(dir, "bench.txt"), filepath.Join(dir, "README.md")
	doc := "<!-- results:begin -->\nold\n<!-- results:end -->\n"
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(readme, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(in, dir, readme, "store-results"); err == nil {
		t.Errorf("run(section store-results) = nil error, want one: %s has no such section", readme)
	}
	if svgs, _ := filepath.Glob(filepath.Join(dir, "*.svg")); len(svgs) > 0 {
		t.Errorf("run(section store-results) failed but wrote %v", svgs)
	}
	if got, _ := os.ReadFile(readme); string(got) != doc {
		t.Errorf("run(section store-results) failed but changed the README to %q", got)
	}
}

// TestRunOtherSuitesSection runs the command on the store results with
// the default section, the bus table's (a forgotten -section), and wants an
// error and the bus table kept.
func TestRunOtherSuitesSection(t *testing.T) {
	dir := t.TempDir()
	in, readme := filepath.Join(dir, "store.txt"), filepath.Join(dir, "README.md")
	doc := "<!-- results:begin -->\n![bus](results/OneSubscriber.svg)\n![bus](results/Keyed.svg)\n<!-- results:end -->\n"
	store := "BenchmarkStore/Append/fast-2 100 90 ns/op 1 allocs/op\n"
	if err := os.WriteFile(in, []byte(store), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(readme, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(in, dir, readme, "results"); err == nil {
		t.Errorf("run(store results, section results) = nil error, want one: the section charts other workloads")
	}
	if got, _ := os.ReadFile(readme); string(got) != doc {
		t.Errorf("run(store results, section results) changed the README to %q", got)
	}
	// A run of one of the section's workloads (BENCH=Keyed) replaces it.
	keyed := filepath.Join(dir, "keyed.txt")
	if err := os.WriteFile(keyed, []byte("BenchmarkKeyed/fast-2 100 50 ns/op 0 allocs/op\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(keyed, dir, readme, "results"); err != nil {
		t.Errorf("run(keyed results, section results) = %v, want nil", err)
	}
	// So does a run of another of the suite's workloads (BENCH=IdleLatency
	// next), though the section now charts Keyed alone.
	idle := filepath.Join(dir, "idle.txt")
	if err := os.WriteFile(idle, []byte("BenchmarkIdleLatency/fast-2 100 50 ns/op 0 allocs/op\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(idle, dir, readme, "results"); err != nil {
		t.Errorf("run(idle latency results, section of keyed results) = %v, want nil", err)
	}
	// And the store results are still refused there.
	if err := run(in, dir, readme, "results"); err == nil {
		t.Errorf("run(store results, section of idle latency results) = nil error, want one")
	}
}

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		v    float64
		want string
	}{{0, "0"}, {7.384, "7.38"}, {1, "1"}, {50.04, "50"}, {10, "10"}, {287.6, "288"}, {1024341, "1,024,341"}, {1000, "1,000"},
		// Below 1, three significant digits too: not 0 for a median that
		// is not, which the table would show as too fast for the clock.
		{0.5, "0.5"}, {0.0123, "0.0123"}, {0.004, "0.004"}, {0.001, "0.001"}} {
		if got := trim(tt.v); got != tt.want {
			t.Errorf("trim(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
	if got, want := chartFile("Store/Append"), "StoreAppend.svg"; got != want {
		t.Errorf("chartFile(Store/Append) = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		v    float64
		want string
	}{
		{1.5e6, "1.5 ms"}, {999.4, "999 ns"}, {1000, "1 µs"}, {1234, "1.23 µs"},
		// Rounded to three digits, they reach the next unit.
		{999.7, "1 µs"}, {999_800, "1 ms"},
		// Store/Open's log axis has a tick at 1e9 ns, over the slowest
		// open (434 ms), and a store of ten times the events opens in
		// seconds.
		{1e9, "1 s"}, {4.34e9, "4.34 s"}, {999_400_000, "999 ms"}, {999_800_000, "1 s"},
	} {
		if got := formatNs(tt.v); got != tt.want {
			t.Errorf("formatNs(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

// TestRunChartLinks runs the command with charts drawn into a directory
// other than a child of the README's, and wants the table's links to lead
// from the README to the charts.
func TestRunChartLinks(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "bench.txt")
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ readme, out, want string }{
		{"README.md", "results", "results/Keyed.svg"},
		{"README.md", "site/charts", "site/charts/Keyed.svg"},
		{"docs/README.md", "results", "../results/Keyed.svg"},
		{"docs/README.md", "docs/results/", "results/Keyed.svg"},
	} {
		readme, out := filepath.Join(dir, tt.readme), filepath.Join(dir, tt.out)
		for _, d := range []string{filepath.Dir(readme), out} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		doc := "<!-- results:begin -->\n<!-- results:end -->\n"
		if err := os.WriteFile(readme, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := run(in, out, readme, "results"); err != nil {
			t.Fatalf("run(-out %s, -readme %s) = %v", tt.out, tt.readme, err)
		}
		got, _ := os.ReadFile(readme)
		if link := "](" + tt.want + ")"; !strings.Contains(string(got), link) {
			t.Errorf("run(-out %s, -readme %s) wrote %q, want links like %q", tt.out, tt.readme, got, link)
		}
	}
}

// TestCommittedResults draws the committed results again, into a copy of
// the README and a directory of their own, and wants the README's tables
// and the charts in results/ to be exactly what they draw: the figures
// shown are the figures measured, never typed in or left behind by a
// change to this command.
func TestCommittedResults(t *testing.T) {
	const readme, results = "../../README.md", "../../results"
	doc, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "results")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	redrawn := filepath.Join(dir, "README.md")
	if err := os.WriteFile(redrawn, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, suite := range []struct{ in, section string }{
		{"bench.txt", "results"},
		{"store.txt", "store-results"},
	} {
		if err := run(filepath.Join(results, suite.in), out, redrawn, suite.section); err != nil {
			t.Fatalf("run(results/%s, section %s) = %v", suite.in, suite.section, err)
		}
	}
	if got, _ := os.ReadFile(redrawn); !bytes.Equal(lf(got), lf(doc)) {
		t.Errorf("README.md's results tables are not what results/bench.txt and results/store.txt draw; run go run ./cmd/chart (see README.md)")
	}
	charts, err := filepath.Glob(filepath.Join(out, "*.svg"))
	if err != nil || len(charts) == 0 {
		t.Fatalf("no charts drawn: %v", err)
	}
	for _, c := range charts {
		want, _ := os.ReadFile(c)
		if got, err := os.ReadFile(filepath.Join(results, filepath.Base(c))); err != nil || !bytes.Equal(lf(got), want) {
			t.Errorf("results/%s is not what the results draw (%v); run go run ./cmd/chart", filepath.Base(c), err)
		}
	}
}

// lf is text with the line ends this command writes, for a checkout that
// turned them into CRLF (git's core.autocrlf on Windows).
func lf(text []byte) []byte { return bytes.ReplaceAll(text, []byte("\r\n"), []byte("\n")) }
