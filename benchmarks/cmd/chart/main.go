// Command chart turns the benchmark results written by run.sh into one SVG
// bar chart per workload and a table of medians inside README.md, so that
// the figures shown are always the figures measured.
//
// Usage, from the benchmarks directory:
//
//	go run ./cmd/chart [-in results/bench.txt] [-out results] [-readme README.md] [-section results]
//
// The input is go test -bench output, any number of counts, optionally led
// by "key: value" configuration lines (benchstat's format), all run at one
// GOMAXPROCS (one -cpu value), since a cell has one median. Benchmarks are
// named Benchmark<Workload>/<peer>, where the workload may have parts of its
// own (Store/Append), and each workload's chart is <Workload>.svg with the
// slashes left out (StoreAppend.svg). The table replaces whatever stands
// between the lines "<!-- results:begin -->" and "<!-- results:end -->",
// or the lines of another -section name, so that each input file (the bus
// workloads, the store workloads) keeps a table of its own; a section whose
// charts are all of the other suite's workloads (Store/... against the
// buses', or the reverse) is refused. The table links to each chart by its
// path from the README's directory. Both name the machine from the input's
// "machine" line (or go test's "cpu" line), adding the GOMAXPROCS of the
// results where that line does not give it as its cores, and the run's
// count, benchtime, load, date and storage lines.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	in := flag.String("in", "results/bench.txt", "benchmark output to read")
	out := flag.String("out", "results", "directory for the SVG charts")
	readme := flag.String("readme", "README.md", "markdown file whose results section is rewritten; empty for none")
	section := flag.String("section", "results", "name of the section of -readme to rewrite")
	flag.Parse()
	if err := run(*in, *out, *readme, *section); err != nil {
		fmt.Fprintln(os.Stderr, "chart:", err)
		os.Exit(1)
	}
}

func run(in, out, readme, section string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	// The README's new text is made first, so that a README without the
	// section fails before any chart is replaced: charts and table always
	// come from one run.
	var doc []byte
	if readme != "" {
		if doc, err = os.ReadFile(readme); err != nil {
			return err
		}
		dir, err := linkDir(readme, out)
		if err != nil {
			return err
		}
		doc, err = replaceSection(doc, section, res.table(dir))
		if err != nil {
			return fmt.Errorf("%s: %w", readme, err)
		}
	}
	for _, w := range res.workloads {
		name := filepath.Join(out, chartFile(w))
		if err := os.WriteFile(name, res.chart(w), 0o644); err != nil {
			return err
		}
	}
	if readme == "" {
		return nil
	}
	return os.WriteFile(readme, doc, 0o644)
}

// linkDir is the path of the chart directory out as the markdown file
// readme links to it: relative to the directory readme is in.
func linkDir(readme, out string) (string, error) {
	from, err := filepath.Abs(filepath.Dir(readme))
	if err != nil {
		return "", err
	}
	to, err := filepath.Abs(out)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(from, to)
	if err != nil {
		return "", fmt.Errorf("%s cannot link to the charts in %s: %w", readme, out, err)
	}
	return filepath.ToSlash(rel), nil
}

// workloadInfo describes the workloads that run.sh produces; others are
// charted under their own name.
var workloadInfo = map[string]string{
	"OneSubscriber":  "1 subscriber",
	"TenSubscribers": "10 subscribers",
	"Keyed":          "Keyed, 4 ordered workers",
	"IdleLatency":    "Idle latency, publish to handled",

	"Store/Append":     "1 appender, durable",
	"Store/Append8":    "8 appenders, durable",
	"Store/ReadStream": "Read a stream of 1,000",
	"Store/ReadAll":    "Read all 100,000",
	"Store/Open":       "Open a store of 1,000,000",
}

// chartFile is the name of a workload's chart.
func chartFile(workload string) string {
	return strings.ReplaceAll(workload, "/", "") + ".svg"
}

// results holds every sample of every benchmark, in order of appearance.
type results struct {
	config map[string]string
	// procs is the GOMAXPROCS of every result, from their names.
	procs     string
	workloads []string
	peers     []string
	samples   map[cell]map[string][]float64 // unit -> one value per run
}

type cell struct{ workload, peer string }

var (
	configLine = regexp.MustCompile(`^([a-z][a-zA-Z0-9-]*): *(.*)$`)
	procSuffix = regexp.MustCompile(`-[0-9]+$`)
)

// parse reads go test -bench output.
func parse(r io.Reader) (*results, error) {
	res := &results{config: map[string]string{}, samples: map[cell]map[string][]float64{}}
	// GOMAXPROCS of the first result; go test names no suffix for 1.
	procs := ""
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if m := configLine.FindStringSubmatch(text); m != nil {
			res.config[m[1]] = m[2]
			continue
		}
		if !strings.HasPrefix(text, "Benchmark") {
			continue
		}
		fields := strings.Fields(text)
		name, ok := strings.CutPrefix(procSuffix.ReplaceAllString(fields[0], ""), "Benchmark")
		i := strings.LastIndexByte(name, '/')
		workload, peer := name[:max(i, 0)], name[i+1:]
		if !ok || i <= 0 || peer == "" || len(fields) < 4 || len(fields)%2 != 0 {
			return nil, fmt.Errorf("line %d: not Benchmark<Workload>/<peer> N value unit...: %q", line, text)
		}
		p := strings.TrimPrefix(procSuffix.FindString(fields[0]), "-")
		if p == "" {
			p = "1"
		}
		if procs == "" {
			procs = p
		} else if p != procs {
			return nil, fmt.Errorf("line %d: GOMAXPROCS %s after %s (-cpu): one median would mix them; chart one at a time", line, p, procs)
		}
		if !slices.Contains(res.workloads, workload) {
			res.workloads = append(res.workloads, workload)
		}
		if !slices.Contains(res.peers, peer) {
			res.peers = append(res.peers, peer)
		}
		c := cell{workload, peer}
		if res.samples[c] == nil {
			res.samples[c] = map[string][]float64{}
		}
		n, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		metrics := map[string]float64{}
		for i := 2; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			metrics[fields[i+1]] = v
		}
		// go test prints violations/event to seven decimals, so a few in
		// tens of millions of events read 0; the keyed benchmark reports
		// their count too, from which the share is exact.
		if v, ok := metrics["violations"]; ok && n > 0 {
			metrics["violations/event"] = v / n
		}
		for unit, v := range metrics {
			res.samples[c][unit] = append(res.samples[c][unit], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res.workloads) == 0 {
		return nil, errors.New("no benchmark results")
	}
	res.procs = procs
	return res, nil
}

// median returns the median of the samples of one unit, benchstat's
// summary statistic.
func (r *results) median(c cell, unit string) (float64, bool) {
	vs := slices.Clone(r.samples[c][unit])
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if n := len(vs); n%2 == 0 {
		return (vs[n/2-1] + vs[n/2]) / 2, true
	}
	return vs[len(vs)/2], true
}

// unit is the time unit a workload is charted in: per delivery where the
// benchmark reports it (fan-out), else per event.
func (r *results) unit(workload string) string {
	for _, p := range r.peers {
		if _, ok := r.samples[cell{workload, p}]["ns/delivery"]; ok {
			return "ns/delivery"
		}
	}
	return "ns/op"
}

func (r *results) title(workload string) string {
	title := workloadInfo[workload]
	if title == "" {
		title = workload
	}
	return fmt.Sprintf("%s: ns per %s, median (lower is better)", title, r.per(workload))
}

// per is what one operation of a workload is: an event, a delivery (where
// the benchmark reports ns/delivery) or, for Store/Open, an open.
func (r *results) per(workload string) string {
	switch {
	case workload == "Store/Open":
		return "open"
	case r.unit(workload) == "ns/delivery":
		return "delivery"
	}
	return "event"
}

// machine is the line that says where the figures come from.
func (r *results) machine() string {
	m := r.config["machine"]
	if m == "" {
		m = r.config["cpu"]
	}
	var extra []string
	// The names' GOMAXPROCS, left out of the table and charts, where the
	// machine line does not give it as its cores: under taskset, or a
	// container's CPU quota, Go runs on fewer cores than the machine has.
	if !strings.Contains(m, " "+r.procs+" cores") {
		extra = append(extra, "GOMAXPROCS "+r.procs)
	}
	// storage, which run.sh writes for the store suite, is the file
	// system the stores were on: what a durable append waited for.
	for _, k := range []string{"count", "benchtime", "load", "date", "storage"} {
		if v := r.config[k]; v != "" {
			extra = append(extra, k+" "+v)
		}
	}
	if len(extra) > 0 {
		m += " (" + strings.Join(extra, ", ") + ")"
	}
	return m
}

// chart draws one horizontal bar per peer. A log scale is used when the
// largest bar is over 30 times the smallest, so that both stay readable,
// unless a bar is zero, which a log scale cannot place.
func (r *results) chart(workload string) []byte {
	type bar struct {
		peer string
		v    float64
	}
	unit := r.unit(workload)
	var bars []bar
	lo, hi := math.Inf(1), 0.0
	for _, p := range r.peers {
		if v, ok := r.median(cell{workload, p}, unit); ok {
			bars = append(bars, bar{p, v})
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	const (
		left, right, top, rowH, width = 120.0, 100.0, 48.0, 22.0, 760.0
	)
	plot := width - left - right
	logScale := lo > 0 && hi > 30*lo
	var x func(float64) float64
	var ticks []float64
	if logScale {
		// The axis starts at a power of ten at least a quarter of a decade
		// below the smallest bar: at the power just below it, that bar
		// would be a sliver, or nothing at all at a power of ten.
		a, b := math.Floor(math.Log10(lo)-0.25), math.Ceil(math.Log10(hi))
		x = func(v float64) float64 { return plot * (math.Log10(v) - a) / (b - a) }
		for e := a; e <= b; e++ {
			ticks = append(ticks, math.Pow(10, e))
		}
	} else {
		step := niceStep(hi / 5)
		// At least one step, for a chart of zeros.
		end := max(math.Ceil(hi/step)*step, step)
		x = func(v float64) float64 { return plot * v / end }
		for t := 0.0; t <= end+step/2; t += step {
			ticks = append(ticks, t)
		}
	}
	height := top + rowH*float64(len(bars)) + 40
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	scale := "linear scale"
	if logScale {
		scale = "log scale"
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(r.title(workload)))
	fmt.Fprintf(&b, `<text x="%.0f" y="34" fill="#555">%s; %s</text>`+"\n", left, scale, html.EscapeString(r.machine()))
	bottom := top + rowH*float64(len(bars))
	for _, t := range ticks {
		if logScale && t <= 0 {
			continue
		}
		tx := left + x(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", tx, top-4, tx, bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%s</text>`+"\n", tx, bottom+16, formatNs(t))
	}
	for i, bar := range bars {
		y := top + rowH*float64(i)
		color := "#8a9bb0"
		if strings.HasPrefix(bar.peer, "eventbus") {
			color = "#2b6cb0"
		}
		w := max(x(bar.v), 1)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`+"\n", left-6, y+15, html.EscapeString(bar.peer))
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.1f" height="%.0f" fill="%s"/>`+"\n", left, y+3, w, rowH-6, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f">%s</text>`+"\n", left+w+4, y+15, formatNs(bar.v))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#555">%s</text>`+"\n", left, bottom+32, html.EscapeString(unit))
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// niceStep rounds a raw tick step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// formatNs prints a duration in nanoseconds with three significant digits
// in the largest unit, up to seconds, that keeps it at least 1 once rounded
// to them: from 999.5 ns, which trim prints as 1,000, it is 1 µs.
func formatNs(v float64) string {
	switch {
	case v >= 999.5e6:
		return trim(v/1e9) + " s"
	case v >= 999.5e3:
		return trim(v/1e6) + " ms"
	case v >= 999.5:
		return trim(v/1e3) + " µs"
	default:
		return trim(v) + " ns"
	}
}

// trim prints v with three significant digits (more above 1000, with
// thousands separators) and no trailing zeros.
func trim(v float64) string {
	prec := 0
	switch a := math.Abs(v); {
	case a == 0 || a >= 100:
	case a >= 10:
		prec = 1
	case a >= 1:
		prec = 2
	default: // the first digit that is not 0, and two more
		prec = 2 - int(math.Floor(math.Log10(a)))
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	for i := len(s) - 3; i > 0 && !strings.Contains(s, "."); i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// table is the markdown that goes into the README: the machine, one row
// per peer with the median time and allocations of every workload, and
// whether per-key order held, then the charts.
func (r *results) table(chartDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s.\n\n", r.machine())
	b.WriteString("| peer |")
	sep := "|---|"
	for _, w := range r.workloads {
		title := workloadInfo[w]
		if title == "" {
			title = w
		}
		// Allocations are counted per published event (per open for
		// Store/Open), even where time is per delivery.
		allocsPer := "event"
		if w == "Store/Open" {
			allocsPer = "open"
		}
		fmt.Fprintf(&b, " %s: ns/%s | allocs/%s |", title, r.per(w), allocsPer)
		sep += "---:|---:|"
		if r.hasOrder(w) {
			b.WriteString(" per-key order held |")
			sep += ":---:|"
		}
	}
	b.WriteString("\n" + sep + "\n")
	for _, p := range r.peers {
		fmt.Fprintf(&b, "| %s |", p)
		for _, w := range r.workloads {
			c := cell{w, p}
			fmt.Fprintf(&b, " %s | %s |", r.cellText(c, r.unit(w)), r.cellText(c, "allocs/op"))
			if r.hasOrder(w) {
				fmt.Fprintf(&b, " %s |", r.orderText(c))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, w := range r.workloads {
		fmt.Fprintf(&b, "![%s](%s/%s)\n", html.EscapeString(r.title(w)), chartDir, chartFile(w))
	}
	return b.String()
}

func (r *results) cellText(c cell, unit string) string {
	v, ok := r.median(c, unit)
	if !ok {
		return "–"
	}
	if unit == "allocs/op" {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return trim(v)
}

func (r *results) hasOrder(workload string) bool {
	for _, p := range r.peers {
		if _, ok := r.samples[cell{workload, p}]["violations/event"]; ok {
			return true
		}
	}
	return false
}

// orderText is "yes" when no run saw an event of a key after a later one,
// else the worst share of such events.
func (r *results) orderText(c cell) string {
	vs := r.samples[c]["violations/event"]
	if len(vs) == 0 {
		return "–"
	}
	if worst := slices.Max(vs); worst > 0 {
		return "no (" + twoDigits(100*worst) + "% of events)"
	}
	return "yes"
}

// twoDigits prints v, above 0, with two significant digits in plain
// decimals and no trailing zeros: %.2g would print 100 as 1e+02 and
// 0.00003 as 3e-05.
func twoDigits(v float64) string {
	prec := max(0, 1-int(math.Floor(math.Log10(v))))
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// replaceSection puts text between the lines "<!-- section:begin -->" and
// "<!-- section:end -->" of doc. It refuses when the section charts only
// workloads of another suite than text does: the other suite's section,
// taken by a forgotten -section. A section of the same suite is replaced
// whatever its workloads, as after a run.sh with a BENCH of one workload.
func replaceSection(doc []byte, section, text string) ([]byte, error) {
	beginMark, endMark := "<!-- "+section+":begin -->", "<!-- "+section+":end -->"
	s := string(doc)
	i := strings.Index(s, beginMark)
	j := strings.Index(s, endMark)
	if i < 0 || j < i {
		return nil, fmt.Errorf("no %q ... %q section", beginMark, endMark)
	}
	was, now := charts(s[i:j]), charts(text)
	sameSuite := func(w string) bool {
		return slices.ContainsFunc(now, func(n string) bool { return suiteOf(n) == suiteOf(w) })
	}
	if len(was) > 0 && !slices.ContainsFunc(was, sameSuite) {
		return nil, fmt.Errorf("section %q charts %s, of another suite than this input's workloads (another -section?)", section, strings.Join(was, ", "))
	}
	return []byte(s[:i+len(beginMark)] + "\n" + text + s[j:]), nil
}

// suiteOf is the suite of run.sh that a chart's workload belongs to: the
// store suite's workloads are Store/<name>, charted as Store<name>.svg,
// and the others are the buses'.
func suiteOf(chart string) string {
	if strings.HasPrefix(chart, "Store") {
		return "store"
	}
	return "bus"
}

var chartLink = regexp.MustCompile(`\]\((?:[^()]*/)?([^()/]+\.svg)\)`)

// charts returns the names of the chart files that markdown links to.
func charts(markdown string) []string {
	var names []string
	for _, m := range chartLink.FindAllStringSubmatch(markdown, -1) {
		names = append(names, m[1])
	}
	return names
}
