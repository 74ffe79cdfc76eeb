// Command eventbus inspects, checks and repairs the directory of an
// eventbus FileStore. Stop the application that uses the store first: it
// holds the store's lock, and every subcommand fails with "file store
// locked" while it runs. Every subcommand but repair opens the store
// read-only, so several can run at once.
//
// Usage:
//
//	eventbus inspect DIR                 streams, event counts, positions, sizes
//	eventbus stats DIR                   totals: segments, bytes, events, streams
//	eventbus verify DIR                  check every checksum; exit status 1 on damage
//	eventbus read [flags] DIR            print events as JSON lines
//	eventbus tail [-n N] [-stream S] DIR print the last events as JSON lines
//	eventbus repair DIR                  cut from the first damage on, keeping a copy
//	eventbus help [COMMAND]              this usage, or that of COMMAND
//
// Verify also reports an incomplete final record, which a crash in the
// middle of a write leaves: that is no damage (exit status 0), and the next
// open for writing, or repair, cuts it without keeping a copy.
//
// Repair cuts the store from its first damaged record on: the records after
// it too, however sound, since the store's positions must follow one
// another. What it cuts it moves into a repair-<time> subdirectory, and it
// says at which position the store now ends, where its next appends take
// the positions of the events cut. Every subcommand but repair fails on a
// store whose last segment files are missing, which its file LAST names;
// repair then accepts the loss, moving LAST into that subdirectory. So for
// a store whose first segment files are missing, or damaged before their
// first event: repair then makes it start at the first one left, as
// retention would, keeping that file as it was in the subdirectory, and
// says where the store now starts. A segment file missing before the
// last is put back best, from a copy: repair cuts the store where it is
// missing, moving the sound segments after it into that subdirectory.
//
// Read and tail print an event's data decompressed, as its encoding says
// ("deflate" for one that a Registry compressed), and then as JSON
// ("data") when it is JSON in UTF-8, else as base64 ("dataBase64"). Data
// that cannot be decompressed (corrupt, or of an encoding this command
// does not know) is printed as it is stored, in base64, with the reason
// ("dataError"). They print an event's metadata entries as strings
// ("metadata"), but for those whose key or value is not UTF-8, as a list
// of base64 key and value pairs ("metadataBase64"); its encoding as a
// string ("encoding"), or as base64 ("encodingBase64") if it is not
// UTF-8. In the strings, every character that is not printable
// (controls, bidirectional overrides) is escaped as \uXXXX, so that a line
// cannot drive the terminal that shows it.
//
// The flags of read are -stream (one stream, by revision), -from (the
// first position, or revision with -stream) and -limit. With -stream, read
// and tail fail (exit status 1) for a stream that was never written or is
// deleted, and refuse (exit status 2) a name that no stream can have:
// empty, not UTF-8, or over 1,024 bytes. Without -stream, read and tail
// leave out the system streams, whose names start with '$' (snapshots,
// checkpoints), as the store's ReadAll does: inspect lists them, and
// -stream reads one.
//
// Inspect lists every event the log keeps. Its DATA BYTES column counts
// the data as stored: compressed, for the events that a Registry
// compressed, which read prints decompressed. Its STATE column says what
// hides some of a stream's events from read -stream: a soft delete
// ("deleted", or "from revision N" for a stream written again since), and
// the stream's metadata ("max count N", "max age D").
//
// Inspect prints a stream name that holds a space or a character that is
// not printable (a tab, a newline, an escape sequence) quoted, with Go's
// escapes, as strconv.Quote does; so also a name that starts with '"'.
//
// The exit status is 0 on success, 1 on a failure or damage found, and 2
// for bad usage.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/seed-a6f1faae/eventbus"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: eventbus <command> [flags] DIR

commands:
  inspect DIR                  streams, event counts, positions, sizes
  stats DIR                    totals: segments, bytes, events, streams
  verify DIR                   check every checksum; exit status 1 on damage
  read [flags] DIR             print events as JSON lines
  tail [-n N] [-stream S] DIR  print the last events as JSON lines
  repair DIR                   cut from the first damage on, keeping a copy
  help [command]               this usage, or that of a command

Without -stream, read and tail leave out system streams (named $...).
Run eventbus help <command> (or eventbus <command> -h) for the flags
of a command.`

// summary says what command cmd does, for its -h.
func summary(cmd string) string {
	switch cmd {
	case "inspect":
		return "Inspect lists the streams of the store: event counts, data sizes,\nrevisions, positions and state."
	case "stats":
		return "Stats prints the totals of the store: segments, bytes, events, streams."
	case "verify":
		return "Verify checks every checksum of the store; exit status 1 on damage."
	case "read":
		return "Read prints the events of the store, but for the system streams (named\n$...), or those of one stream, as JSON lines." + dataHelp
	case "tail":
		return "Tail prints the last events of the store, but for the system streams\n(named $...), or those of one stream, as JSON lines, oldest first." + dataHelp
	case "repair":
		return "Repair cuts the store from its first damaged record on, sound records\nafter it too, keeping a copy of what it cuts in a repair-<time>\nsubdirectory, and says where the store now ends. A store whose first\nsegments are missing, or damaged before their first event, starts at the\nfirst one left instead."
	}
	return ""
}

// dataHelp says how read and tail print an event's data.
const dataHelp = `

An event's data is printed decompressed, as its "encoding" says: as JSON
("data") if it is JSON, else in base64 ("dataBase64"); data that cannot be
decompressed as stored, in base64, with the reason ("dataError").`

// maxStreamLen is the longest stream name in bytes, as the Store doc of
// package eventbus gives it.
const maxStreamLen = 1024

// run runs the command of args and returns the exit status: 0 for success,
// 1 for damage found or a failure, 2 for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	// As go help build: help for a command is its -h.
	if cmd == "help" && len(args) > 0 {
		switch {
		case len(args) > 1:
			fmt.Fprintf(stderr, "eventbus help: want one command, not %q\n%s\n", args, usage)
			return 2
		case summary(args[0]) == "" && args[0] != "help":
			fmt.Fprintf(stderr, "eventbus help: unknown command %q\n%s\n", args[0], usage)
			return 2
		}
		cmd, args = args[0], []string{"-h"}
	}
	switch cmd {
	case "inspect", "stats", "verify", "read", "tail", "repair":
	case "help", "-h", "-help", "--help":
		if _, err := fmt.Fprintln(stdout, usage); err != nil {
			fmt.Fprintf(stderr, "eventbus %s: %v\n", cmd, err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "eventbus: unknown command %q\n%s\n", cmd, usage)
		return 2
	}
	// Each command takes only its own flags, so that one meant for another
	// (read -n 5) is refused instead of ignored.
	fs := flag.NewFlagSet("eventbus "+cmd, flag.ContinueOnError)
	// The usage goes to stdout when asked for (-h), else to stderr.
	var help bytes.Buffer
	fs.SetOutput(&help)
	var (
		stream string
		from   uint64
		limit  int
		n      = 10
	)
	switch cmd {
	case "read":
		fs.StringVar(&stream, "stream", "", "read only this stream, by revision")
		fs.Uint64Var(&from, "from", 0, "first position, or revision with -stream")
		fs.IntVar(&limit, "limit", 0, "most events to print; 0 means all")
	case "tail":
		fs.IntVar(&n, "n", n, "number of events")
		fs.StringVar(&stream, "stream", "", "only the events of this stream")
	}
	fs.Usage = func() {
		flags := ""
		fs.VisitAll(func(*flag.Flag) { flags = " [flags]" })
		fmt.Fprintf(fs.Output(), "usage: eventbus %s%s DIR\n\n%s\n", cmd, flags, summary(cmd))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			if _, err := stdout.Write(help.Bytes()); err != nil {
				fmt.Fprintf(stderr, "eventbus %s: %v\n", cmd, err)
				return 1
			}
			return 0
		}
		stderr.Write(help.Bytes())
		return 2
	}
	if fs.NArg() != 1 {
		// Parsing stops at the directory: name a flag given after it.
		after := ""
		for i, a := range fs.Args() {
			if i > 0 && strings.HasPrefix(a, "-") {
				after = fmt.Sprintf(", not %s after it", a)
				break
			}
		}
		fmt.Fprintf(stderr, "eventbus %s: want one store directory, after the flags%s\n", cmd, after)
		fs.SetOutput(stderr)
		fs.Usage()
		return 2
	}
	dir := fs.Arg(0)
	// Buffered: a write is a system call, and read may print millions
	// of lines.
	buf := bufio.NewWriter(stdout)
	out := &output{w: buf}
	stdout = out
	if n <= 0 {
		fmt.Fprintf(stderr, "eventbus tail: -n must be positive, not %d\n", n)
		return 2
	}
	// An empty -stream, from an unset shell variable say, would read every
	// stream as if it were not given.
	streamSet := false
	fs.Visit(func(f *flag.Flag) { streamSet = streamSet || f.Name == "stream" })
	if streamSet && stream == "" {
		fmt.Fprintf(stderr, "eventbus %s: -stream must name a stream; leave it out for every stream\n", cmd)
		return 2
	}
	// As the store names streams: a name it cannot hold is a typing
	// error, not a failure of the store.
	if len(stream) > maxStreamLen {
		fmt.Fprintf(stderr, "eventbus %s: -stream must be at most %d bytes, not %d\n", cmd, maxStreamLen, len(stream))
		return 2
	}
	if !utf8.ValidString(stream) {
		fmt.Fprintf(stderr, "eventbus %s: -stream %q is not valid UTF-8, as every stream name is\n", cmd, stream)
		return 2
	}
	if limit < 0 {
		fmt.Fprintf(stderr, "eventbus %s: -limit must not be negative, not %d\n", cmd, limit)
		return 2
	}
	var err error
	switch cmd {
	case "inspect":
		err = withStore(dir, stderr, func(s *eventbus.FileStore, _ int64) error { return inspect(ctx, s, stdout, stderr) })
	case "stats":
		err = withStore(dir, stderr, func(s *eventbus.FileStore, _ int64) error {
			st := s.Stats()
			rows := [][2]string{
				{"segments", fmt.Sprint(st.Segments)}, {"bytes", fmt.Sprint(st.Bytes)},
				{"first position", fmt.Sprint(st.FirstPosition)}, {"next position", fmt.Sprint(st.NextPosition)},
				{"events", fmt.Sprint(st.NextPosition - st.FirstPosition)}, {"streams", fmt.Sprint(st.Streams)},
			}
			// The numbers right-aligned, in a column of their own.
			var kw, vw int
			for _, r := range rows {
				kw, vw = max(kw, len(r[0])), max(vw, len(r[1]))
			}
			for _, r := range rows {
				fmt.Fprintf(stdout, "%-*s  %*s\n", kw, r[0], vw, r[1])
			}
			return nil
		})
	case "verify":
		err = withStore(dir, stderr, func(s *eventbus.FileStore, fileBytes int64) error {
			st := s.Stats()
			fmt.Fprintf(stdout, "ok: %s in %s, every checksum verified\n", count(st.NextPosition-st.FirstPosition, "event"), count(st.Segments, "segment"))
			// Not damage, which opening reports: a crash in the
			// middle of a write leaves it, and opening for
			// writing cuts it.
			if torn := fileBytes - st.Bytes; torn > 0 {
				fmt.Fprintf(stdout, "the last segment ends in an incomplete record of %s, left by a crash: the next open for writing (or repair) cuts it\n", count(torn, "byte"))
			}
			return nil
		})
	case "read":
		err = withStore(dir, stderr, func(s *eventbus.FileStore, _ int64) error {
			opts := &eventbus.ReadOptions{From: from, Limit: limit}
			return printEvents(ctx, s, stream, opts, false, stdout)
		})
	case "tail":
		err = withStore(dir, stderr, func(s *eventbus.FileStore, _ int64) error {
			return printEvents(ctx, s, stream, &eventbus.ReadOptions{Limit: n}, true, stdout)
		})
	case "repair":
		if err = checkDir(dir); err == nil {
			var kept string
			last, before := lastSegment(dir)
			if kept, err = eventbus.RepairFileStore(dir); err == nil {
				// Opening for writing cuts an incomplete final
				// record, keeping no copy: say so.
				now, after := lastSegment(dir)
				torn := int64(0)
				if last != "" && now == last && before > after && !keptCopyOf(kept, last) {
					torn = before - after
				}
				switch {
				case kept == "" && torn > 0:
					fmt.Fprintf(stdout, "nothing damaged; cut an incomplete final record of %s, left by a crash\n", count(torn, "byte"))
				case kept == "":
					fmt.Fprintln(stdout, "nothing to repair")
				default:
					fmt.Fprintf(stdout, "repaired; what was cut or changed is in %s, as it was\n", kept)
					if torn > 0 {
						fmt.Fprintf(stdout, "and it cut an incomplete final record of %s from %s, left by a crash, keeping no copy\n", count(torn, "byte"), last)
					}
					err = reportLoss(dir, kept, stdout)
				}
			} else if kept != "" {
				err = fmt.Errorf("%w; what repair copied before the failure is in %s", err, kept)
			}
		}
	}
	// What was printed before a failure goes out too.
	if ferr := buf.Flush(); err == nil {
		err = cmp.Or(out.err, ferr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "eventbus %s: %v\n", cmd, err)
		var ce *eventbus.CorruptionError
		switch {
		case !errors.As(err, &ce) || cmd == "repair":
		case filepath.Base(ce.Path) == "LAST" && strings.HasSuffix(ce.Reason, " lost"):
			fmt.Fprintf(stderr, "the store's last segments are missing, with their events; `eventbus repair %s` accepts the loss, so that the store opens again\n", shellArg(dir))
		case strings.HasSuffix(ce.Reason, "without the state of the streams"):
			fmt.Fprintf(stderr, "the store's first segments are missing, with their events: put them back if a copy has them; else `eventbus repair %s` accepts the loss, so that the store starts at the first segment left\n", shellArg(dir))
		case strings.HasPrefix(ce.Reason, "segment ") && strings.HasSuffix(ce.Reason, " is missing"):
			// A repair would cut the store there, the sound segments
			// after it too: the advice to cut the damage hid that.
			fmt.Fprintf(stderr, "a segment of the store is missing, with its events: put it back if a copy has it; else `eventbus repair %s` cuts the store where it is missing, moving the segments after it into a copy\n", shellArg(dir))
		case filepath.Base(ce.Path) == "LAST":
			fmt.Fprintf(stderr, "the store's file LAST, which names its last segment, is damaged; `eventbus repair %s` moves it aside, keeping a copy, and the store makes it again\n", shellArg(dir))
		default:
			fmt.Fprintf(stderr, "the store is damaged; `eventbus repair %s` cuts the damage, keeping a copy\n", shellArg(dir))
		}
		if errors.Is(err, eventbus.ErrLocked) {
			fmt.Fprintln(stderr, "another program has the store open: stop the application that uses it, or let the eventbus command running on it finish, and try again")
		}
		return 1
	}
	return 0
}

// shellArg returns dir as a shell word that names it, for a command the
// user may paste: as it is when it holds only characters that no shell
// treats specially, else in single quotes; with "./" before a name that
// starts with '-', which the command would take for a flag.
func shellArg(dir string) string {
	if strings.HasPrefix(dir, "-") {
		dir = "./" + dir
	}
	if dir != "" && strings.IndexFunc(dir, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("_-./:@%+=,", r))
	}) < 0 {
		return dir
	}
	return "'" + strings.ReplaceAll(dir, "'", `'\''`) + "'"
}

// output is the standard output of a command, which keeps the first error
// writing to it, so that a command whose output is lost (to a full disk,
// say) fails instead of exiting 0.
type output struct {
	w   io.Writer
	err error
}

// Write writes p to o.w, unless an earlier write failed.
func (o *output) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	o.err = err
	return n, err
}

// reportLoss tells, after a repair that moved what it cut into kept, where
// the store now starts if the repair moved its start (see startMoved), as
// it does when the store's first segments are missing or damaged, and where
// it now ends: its next appends take the positions of the events cut from
// there, if any (a damaged LAST file, which names the store's last
// segment, is cut with none), which readers and checkpoints may have seen.
func reportLoss(dir, kept string, stdout io.Writer) error {
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	if first := s.Stats().FirstPosition; first > 0 && startMoved(dir, kept) {
		fmt.Fprintf(stdout, "the store now starts at position %d: the events before it, in segments missing or damaged, are lost, and so are the changes those made to streams not written since (metadata, deletions)\n", first)
	}
	next := s.Stats().NextPosition
	what := "the events from there on, if any, were cut"
	if lostWithLast(dir, kept) {
		what = fmt.Sprintf("the events from there on, if any, are lost, with the segments that LAST (now in %s) names after it, if any", kept)
	}
	fmt.Fprintf(stdout, "the store now ends at position %d: %s, and its next appends take their positions, so start any reader or checkpoint past %d again from %d\n", next, what, next, next)
	return s.Close()
}

// lostWithLast reports whether the repair that kept what it cut in kept
// moved aside a file LAST that names a segment neither there nor in dir:
// one missing, whose events are lost, not cut. A repair moves LAST aside
// too when the segment it names is one that the repair moved there, after
// damage in an earlier one. A LAST that names no segment (damaged) may
// have named a missing one.
func lostWithLast(dir, kept string) bool {
	b, err := os.ReadFile(filepath.Join(kept, "LAST"))
	if err != nil {
		return false
	}
	num, _, _ := strings.Cut(strings.TrimSuffix(string(b), "\n"), " ")
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return true
	}
	name := fmt.Sprintf("seg-%016x.log", seq)
	for _, d := range []string{dir, kept} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return false
		}
	}
	return true
}

// startMoved reports whether the repair that kept what it cut or changed
// in kept made the store in dir start later: kept holds the file START,
// which named a segment missing, or a segment file at or before the first
// one of dir, which the repair moved aside or wrote again with the state of
// the streams first. A cut keeps what it cuts from a segment under another
// name, and whole segments after it. The repair may leave START as it was,
// for a store whose next segment starts with the state of the streams.
func startMoved(dir, kept string) bool {
	entries, err := os.ReadDir(dir) // sorted by name, and so by sequence number
	if err != nil {
		return false
	}
	i := slices.IndexFunc(entries, func(e os.DirEntry) bool { return isSegment(e.Name()) })
	moved, err := os.ReadDir(kept)
	if err != nil || i < 0 {
		return false
	}
	return slices.ContainsFunc(moved, func(e os.DirEntry) bool {
		return e.Name() == "START" || isSegment(e.Name()) && e.Name() <= entries[i].Name()
	})
}

// isSegment reports whether name is that of a segment file, as the store
// names them: seg-<16 lower-case hex digits>.log. The store ignores other
// names, upper-case digits too.
func isSegment(name string) bool {
	hex, ok := strings.CutSuffix(strings.TrimPrefix(name, "seg-"), ".log")
	if !ok || len(hex) != 16 || !strings.HasPrefix(name, "seg-") {
		return false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return err == nil && fmt.Sprintf("seg-%016x.log", seq) == name
}

// lastSegment returns the name and size of the last segment file in dir,
// the one that can end in an incomplete record, or "" and -1 if it cannot
// read it.
func lastSegment(dir string) (string, int64) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", -1
	}
	// Sorted by name, and so by sequence number.
	for _, e := range slices.Backward(entries) {
		if !isSegment(e.Name()) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return "", -1
		}
		return e.Name(), fi.Size()
	}
	return "", -1
}

// keptCopyOf reports whether repair kept a copy of the segment file name,
// or of what it cut from its end, in the directory kept.
func keptCopyOf(kept, name string) bool {
	entries, err := os.ReadDir(kept) // fails for "", when repair kept nothing
	if err != nil {
		return false
	}
	return slices.ContainsFunc(entries, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), name) })
}

// checkDir fails unless dir is the directory of a store: one that holds a
// segment file or a START or LAST file, as RepairFileStore wants.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		// The store ignores other names, and would start a new store
		// in dir beside them. A START or LAST file without segments is
		// a store whose segments are missing: damage, which repair cuts,
		// as RepairFileStore does.
		if isSegment(e.Name()) || e.Name() == "START" || e.Name() == "LAST" {
			return nil
		}
	}
	return fmt.Errorf("%s is not an eventbus store: it has no segment files (seg-<16 hex digits>.log) nor START or LAST file", dir)
}

// withStore opens the store in dir read-only, showing progress on
// stderr, and calls f with it and the size of the segment files it read,
// which is more than the store's Bytes by an incomplete final record.
func withStore(dir string, stderr io.Writer, f func(s *eventbus.FileStore, fileBytes int64) error) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	p := newProgress(stderr, "reading segments")
	var fileBytes int64
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true, Progress: func(done, total int64) {
		fileBytes = total
		p.show(fmt.Sprintf("%d of %d MiB", done>>20, total>>20), done == total)
	}})
	if err != nil {
		return err
	}
	return errors.Join(f(s, fileBytes), s.Close())
}

// progress prints a line about a long operation to w at most once a second,
// from a second after it started, so that a quick one prints nothing.
type progress struct {
	w     io.Writer
	what  string
	last  time.Time
	shown bool
}

func newProgress(w io.Writer, what string) *progress {
	return &progress{w: w, what: what, last: time.Now()}
}

func (p *progress) show(msg string, final bool) {
	if now := time.Now(); now.Sub(p.last) >= time.Second || (final && p.shown) {
		p.last, p.shown = now, true
		fmt.Fprintf(p.w, "%s: %s\n", p.what, msg)
	}
}

// streamSummary is a line of inspect.
type streamSummary struct {
	events, bytes     int64
	firstPos, lastPos uint64
	firstRev, lastRev uint64
}

func inspect(ctx context.Context, s *eventbus.FileStore, stdout, stderr io.Writer) error {
	st := s.Stats()
	if st.NextPosition == st.FirstPosition {
		fmt.Fprintf(stdout, "no events, %s, %s, %s\n\n", count(st.Segments, "segment"), count(st.Bytes, "byte"), count(st.Streams, "stream"))
	} else {
		fmt.Fprintf(stdout, "%s (positions %d to %d), %s, %s, %s\n\n",
			count(st.NextPosition-st.FirstPosition, "event"), st.FirstPosition, st.NextPosition-1,
			count(st.Segments, "segment"), count(st.Bytes, "byte"), count(st.Streams, "stream"))
	}
	streams := map[string]*streamSummary{}
	p := newProgress(stderr, "reading events")
	read := 0
	for _, prefix := range []string{"", "$"} {
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: prefix}}) {
			if err != nil {
				return err
			}
			sum := streams[e.Stream]
			if sum == nil {
				sum = &streamSummary{firstPos: e.Position, firstRev: e.Revision}
				streams[e.Stream] = sum
			}
			sum.events++
			sum.bytes += int64(len(e.Data))
			sum.lastPos, sum.lastRev = e.Position, e.Revision
			if read++; read%100000 == 0 {
				p.show(count(read, "event"), false)
			}
		}
	}
	names := make([]string, 0, len(streams))
	for name := range streams {
		names = append(names, name)
	}
	sort.Strings(names)
	// Each column as wide as its widest cell, at least as wide as before,
	// so that a long name or number does not push the rest of its row.
	rows := [][]string{{"STREAM", "EVENTS", "DATA BYTES", "REVISIONS", "POSITIONS", "STATE"}}
	for _, name := range names {
		sum := streams[name]
		info, err := s.StreamInfo(ctx, name)
		if err != nil {
			return err
		}
		state := "live"
		switch {
		case info.Tombstoned:
			state = "tombstoned"
		case info.Deleted:
			state = "deleted"
		case info.Start > 0:
			state += fmt.Sprintf(", from revision %d", info.Start)
		}
		if md := info.Metadata; md.MaxCount > 0 {
			state += fmt.Sprintf(", max count %d", md.MaxCount)
		}
		if md := info.Metadata; md.MaxAge > 0 {
			state += fmt.Sprintf(", max age %v", md.MaxAge)
		}
		rows = append(rows, []string{quoteName(name), strconv.FormatInt(sum.events, 10), strconv.FormatInt(sum.bytes, 10),
			fmt.Sprintf("%d-%d", sum.firstRev, sum.lastRev), fmt.Sprintf("%d-%d", sum.firstPos, sum.lastPos), state})
	}
	w := []int{30, 10, 12, 12, 12}
	for _, row := range rows {
		for i := range w {
			w[i] = max(w[i], width(row[i]))
		}
	}
	// The stream left-aligned, the numbers right-aligned; padded by hand,
	// as fmt counts a width in runes, and a wide character (Chinese,
	// Japanese, Korean) takes two columns of a terminal.
	for _, r := range rows {
		fmt.Fprintf(stdout, "%s%s", r[0], strings.Repeat(" ", w[0]-width(r[0])))
		for i := 1; i < len(w); i++ {
			fmt.Fprintf(stdout, " %s%s", strings.Repeat(" ", w[i]-width(r[i])), r[i])
		}
		fmt.Fprintf(stdout, " %s\n", r[len(w)])
	}
	// The store lists no streams, so one without an event kept cannot be
	// named; say that it exists rather than let the total and the table
	// disagree.
	if more := st.Streams - len(names); more > 0 {
		fmt.Fprintf(stdout, "and %s without events kept (given only metadata or a tombstone, or emptied by retention), not listed\n", count(more, "more stream"))
	}
	return nil
}

// wide are the ranges of characters that a terminal shows two columns
// wide: the blocks that hold the characters of East Asian Width W and F
// in Unicode's EastAsianWidth.txt, which is close enough for stream names
// and leaves out a few wide symbols elsewhere.
var wide = [][2]rune{
	{0x1100, 0x115f},   // Hangul Jamo initial consonants
	{0x2e80, 0x303e},   // CJK radicals, Kangxi radicals, CJK symbols and punctuation
	{0x3041, 0x33ff},   // Hiragana, Katakana, Bopomofo, Hangul compatibility Jamo, CJK compatibility
	{0x3400, 0x4dbf},   // CJK unified ideographs extension A
	{0x4e00, 0xa4cf},   // CJK unified ideographs, Yi
	{0xa960, 0xa97f},   // Hangul Jamo extended A
	{0xac00, 0xd7a3},   // Hangul syllables
	{0xf900, 0xfaff},   // CJK compatibility ideographs
	{0xfe10, 0xfe19},   // vertical forms
	{0xfe30, 0xfe6f},   // CJK compatibility forms, small form variants
	{0xff00, 0xff60},   // fullwidth forms
	{0xffe0, 0xffe6},   // fullwidth signs
	{0x1f300, 0x1f64f}, // pictographs, emoticons
	{0x1f900, 0x1f9ff}, // supplemental pictographs
	{0x20000, 0x3fffd}, // CJK unified ideographs extensions B and later
}

// width returns the number of terminal columns that s takes: two for a
// wide character, none for a combining mark, one for any other. The
// cells of inspect hold only printable characters (see quoteName).
func width(s string) int {
	n := 0
	for _, r := range s {
		switch {
		case unicode.In(r, unicode.Mn, unicode.Me):
		case slices.ContainsFunc(wide, func(w [2]rune) bool { return w[0] <= r && r <= w[1] }):
			n += 2
		default:
			n++
		}
	}
	return n
}

// quoteName returns name as inspect prints it: as it is when every
// character is printable and none is a space, else quoted as
// [strconv.Quote] does, so that a name holding a tab, a newline or a
// terminal escape sequence stays on its row, in its column, and cannot
// drive the terminal. A name that starts with a double quote is quoted
// too, so that it cannot pass for a quoted one.
func quoteName(name string) string {
	if strings.HasPrefix(name, `"`) || strings.IndexFunc(name, func(r rune) bool { return r == ' ' || !strconv.IsPrint(r) }) >= 0 {
		return strconv.Quote(name)
	}
	return name
}

// jsonEvent is the JSON form of an event printed by read and tail. Data
// is decompressed, as Encoding says, and then JSON when it is valid JSON
// in UTF-8, else base64; data that cannot be decompressed is in
// DataBase64 as it is stored, and DataError says why.
// A metadata entry whose key and value are UTF-8 is in Metadata, another
// in MetadataBase64, key and value as base64, and an Encoding that is not
// UTF-8 is in EncodingBase64, since a JSON string cannot hold bytes that
// are not UTF-8 (encoding/json turns each into U+FFFD).
type jsonEvent struct {
	Stream         string            `json:"stream"`
	Revision       uint64            `json:"revision"`
	Position       uint64            `json:"position"`
	Time           time.Time         `json:"time"`
	ID             eventbus.ID       `json:"id"`
	Type           string            `json:"type"`
	SchemaVersion  int               `json:"schemaVersion"`
	Encoding       string            `json:"encoding,omitempty"`
	EncodingBase64 []byte            `json:"encodingBase64,omitempty"`
	CorrelationID  *eventbus.ID      `json:"correlationId,omitempty"`
	CausationID    *eventbus.ID      `json:"causationId,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
	MetadataBase64 []jsonMetadata    `json:"metadataBase64,omitempty"`
	Data           json.RawMessage   `json:"data,omitempty"`
	DataBase64     []byte            `json:"dataBase64,omitempty"`
	DataError      string            `json:"dataError,omitempty"`
}

// printEvents prints the events of stream, or of every stream if it is
// empty, as JSON lines: the last opts.Limit of them for last, else those
// that opts reads. A stream that has no events to read, because it
// was never written or is deleted, is an error, so that a misspelt name
// does not pass for an empty stream.
func printEvents(ctx context.Context, s *eventbus.FileStore, stream string, opts *eventbus.ReadOptions, last bool, stdout io.Writer) error {
	if stream != "" {
		info, err := s.StreamInfo(ctx, stream)
		if err != nil {
			return err
		}
		switch {
		case info.Tombstoned: // ReadStream fails with ErrStreamDeleted
		case info.Deleted && strings.HasPrefix(stream, "$"):
			return fmt.Errorf("stream %q is deleted (soft: its events stay in the log, counted by inspect; read without -stream leaves out system streams)", stream)
		case info.Deleted:
			return fmt.Errorf("stream %q is deleted (soft: its events stay in the log, printed by read without -stream)", stream)
		case !info.Exists:
			return fmt.Errorf("no stream %q in the store", stream)
		}
	}
	read := func(opts *eventbus.ReadOptions) iter.Seq2[eventbus.RecordedEvent, error] {
		if stream != "" {
			return s.ReadStream(ctx, stream, opts)
		}
		return s.ReadAll(ctx, opts)
	}
	if last {
		// Back to the first of the last events, then forward from it:
		// holding them all to print them oldest first would take as much
		// memory as their data, the whole store for a large -n. The store,
		// open read-only, gains no events meanwhile.
		back := &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: opts.Limit}
		found := false
		for e, err := range read(back) {
			if err != nil {
				return err
			}
			opts.From, found = e.Position, true
			if stream != "" {
				opts.From = e.Revision
			}
		}
		if !found {
			return nil
		}
	}
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	// A user looking for <b> or a=1&b=2 in the output should find it, not
	// \u003cb\u003e: the lines are for a terminal, not a web page.
	enc.SetEscapeHTML(false)
	printEvent := func(e eventbus.RecordedEvent) error {
		line.Reset()
		if err := enc.Encode(toJSON(e)); err != nil {
			return err
		}
		_, err := stdout.Write(escapeUnprintable(line.Bytes()))
		return err
	}
	for e, err := range read(opts) {
		if err != nil {
			return err
		}
		if err := printEvent(e); err != nil {
			return err
		}
	}
	return nil
}

// escapeUnprintable returns JSON text b with DEL and each character that
// is not ASCII and not printable (C1 controls such as U+009B, which many
// terminals take for the start of a control sequence; bidirectional
// overrides) written as a \uXXXX escape, or two for one beyond U+FFFF:
// encoding/json leaves them as they are. JSON text is ASCII outside
// strings, so the result is the same JSON.
func escapeUnprintable(b []byte) []byte {
	var out []byte // nil until a character needs escaping
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r < utf8.RuneSelf && r != 0x7f || r >= utf8.RuneSelf && strconv.IsPrint(r) {
			if out != nil {
				out = append(out, b[i:i+size]...)
			}
			i += size
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(b)+16), b[:i]...)
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += size
	}
	if out == nil {
		return b
	}
	return out
}

// jsonMetadata is a metadata entry of an event, as read and tail print
// one whose key or value is not UTF-8: both in base64.
type jsonMetadata struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
}

func toJSON(e eventbus.RecordedEvent) jsonEvent {
	j := jsonEvent{
		Stream: e.Stream, Revision: e.Revision, Position: e.Position, Time: e.Time.UTC(), ID: e.ID,
		Type: e.Type, SchemaVersion: e.SchemaVersion, Encoding: e.Encoding, Metadata: e.Metadata,
	}
	if !utf8.ValidString(e.Encoding) {
		j.Encoding, j.EncodingBase64 = "", []byte(e.Encoding)
	}
	for k, v := range e.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			j.MetadataBase64 = append(j.MetadataBase64, jsonMetadata{Key: []byte(k), Value: []byte(v)})
		}
	}
	if j.MetadataBase64 != nil {
		slices.SortFunc(j.MetadataBase64, func(a, b jsonMetadata) int { return bytes.Compare(a.Key, b.Key) })
		j.Metadata = make(map[string]string, len(e.Metadata)-len(j.MetadataBase64))
		for k, v := range e.Metadata {
			if utf8.ValidString(k) && utf8.ValidString(v) {
				j.Metadata[k] = v
			}
		}
	}
	if !e.CorrelationID.IsZero() {
		j.CorrelationID = &e.CorrelationID
	}
	if !e.CausationID.IsZero() {
		j.CausationID = &e.CausationID
	}
	// Compressed data is shown as the codec wrote it, which the encoding
	// field says was compressed; data that cannot be decompressed, as it
	// is stored, with the reason.
	data, err := e.Decompress()
	if err != nil {
		data, j.DataError = e.Data, err.Error()
	}
	// json.Valid takes strings that are not UTF-8, which the encoder
	// would copy into the line as they are.
	if err == nil && json.Valid(data) && utf8.Valid(data) {
		j.Data = data
	} else {
		j.DataBase64 = data
	}
	return j
}

// count says n of what, in the plural unless n is 1: "1 segment",
// "2 segments".
func count[N int | int64 | uint64](n N, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
