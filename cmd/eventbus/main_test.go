package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// newStore returns the directory of a store holding orders o0 to o4 in
// stream "order-1" and one event in "user-1", and the path of its segment.
func newStore(t *testing.T) (dir, seg string) {
	t.Helper()
	dir = t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	for i := range 5 {
		_, err := s.Append(t.Context(), "order-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{"n":` + string(rune('0'+i)) + `}`)})
		require.NoError(t, err)
	}
	_, err = s.Append(t.Context(), "user-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "user.created", Data: []byte("binary\x00")})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	require.Len(t, segs, 1)
	return dir, segs[0]
}

// segmentedStore returns the directory of a store holding six events in
// stream "order-1", two in each of its three segments, and the paths of
// its segments, oldest first.
func segmentedStore(t *testing.T) (dir string, segs []string) {
	t.Helper()
	dir = t.TempDir()
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200})
	require.NoError(t, err)
	for range 6 {
		_, err := s.Append(t.Context(), "order-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{"n":1}`)})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	segs, err = filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	return dir, segs
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCommands(t *testing.T) {
	dir, _ := newStore(t)
	tests := []struct {
		args []string
		want []string // substrings of stdout
	}{
		{[]string{"inspect", dir}, []string{"6 events", "order-1", "5", "0-4", "user-1", "live"}},
		{[]string{"verify", dir}, []string{"ok: 6 events in 1 segment,"}},
		{[]string{"read", "-stream", "order-1", "-from", "3", dir}, []string{`"revision":3`, `"data":{"n":3}`, `"revision":4`}},
		{[]string{"read", "-from", "5", dir}, []string{`"stream":"user-1"`, `"dataBase64":"YmluYXJ5AA=="`}},
		{[]string{"tail", "-n", "2", dir}, []string{`"position":4`, `"position":5`}},
		{[]string{"repair", dir}, []string{"nothing to repair"}},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, tt.args...)
		if code != 0 {
			t.Errorf("eventbus %v: exit status %d, stderr %s", tt.args, code, stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("eventbus %v printed\n%s\nwant it to contain %q", tt.args, stdout, w)
			}
		}
	}
	got := stats(t, dir)
	want := map[string]string{"segments": "1", "bytes": got["bytes"], "first position": "0", "next position": "6", "events": "6", "streams": "2"}
	if !maps.Equal(got, want) || got["bytes"] == "0" {
		t.Errorf("eventbus stats = %v, want %v and bytes", got, want)
	}
	_, stdout, _ := runCmd(t, "read", "-limit", "2", dir)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 2)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &e), "a line of read is JSON")
	_, stdout, _ = runCmd(t, "tail", "-n", "2", dir)
	if i, j := strings.Index(stdout, `"position":4`), strings.Index(stdout, `"position":5`); i > j {
		t.Errorf("tail printed position 5 before 4:\n%s", stdout)
	}
}

// TestEmptyStore checks the commands on a store without events: inspect
// printed "0 events (positions 0 to -1)". Counts of zero take the plural,
// "0 streams" and "0 events", as count gives them.
func TestEmptyStore(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "inspect", dir)
	if code != 0 || !strings.HasPrefix(stdout, "no events, 1 segment, ") || !strings.Contains(stdout, ", 0 streams\n") || strings.Contains(stdout, "-1") {
		t.Errorf("eventbus inspect of an empty store: exit status %d, stdout %q, stderr %q; want it to start with \"no events, 1 segment\" and count 0 streams", code, stdout, stderr)
	}
	if code, stdout, stderr := runCmd(t, "verify", dir); code != 0 || stdout != "ok: 0 events in 1 segment, every checksum verified\n" {
		t.Errorf("eventbus verify of an empty store: exit status %d, stdout %q, stderr %q; want 0 and \"ok: 0 events in 1 segment\"", code, stdout, stderr)
	}
	for _, cmd := range []string{"read", "tail"} {
		if code, stdout, stderr := runCmd(t, cmd, dir); code != 0 || stdout != "" {
			t.Errorf("eventbus %s of an empty store: exit status %d, stdout %q, stderr %q; want 0 and nothing", cmd, code, stdout, stderr)
		}
	}
}

// TestInspectStreamsWithoutEvents checks that inspect accounts for the
// streams it cannot list, those without an event: it counted them in its
// total but left them out of the table without a word.
func TestInspectStreamsWithoutEvents(t *testing.T) {
	dir, _ := newStore(t)
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	require.NoError(t, s.SetStreamMetadata(t.Context(), "order-2", eventbus.StreamMetadata{MaxCount: 3}))
	require.NoError(t, s.Tombstone(t.Context(), "order-3", eventbus.Any))
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "inspect", dir)
	if code != 0 || !strings.Contains(stdout, "4 streams") || !strings.Contains(stdout, "and 2 more streams without events kept") {
		t.Errorf("eventbus inspect: exit status %d, stdout\n%s\nstderr %q; want 4 streams, 2 of them not listed", code, stdout, stderr)
	}
}

// TestInspectStates checks inspect's counts of one and the state of
// deleted streams: no test had a store of a single event, a tombstoned
// or soft-deleted stream, or a single stream without events, so an
// inspect that said "no events" of a store of one, "live" for a deleted
// stream whose events the log still holds, or nothing of one stream it
// could not list, passed every test.
func TestInspectStates(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	appendOne := func(stream string) {
		t.Helper()
		_, err := s.Append(t.Context(), stream, eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(`{}`)})
		require.NoError(t, err)
	}
	appendOne("live")
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "inspect", dir)
	if code != 0 || !strings.HasPrefix(stdout, "1 event (positions 0 to 0), 1 segment, ") || !strings.Contains(stdout, ", 1 stream\n") {
		t.Errorf("eventbus inspect of a store of one event: exit status %d, stdout\n%s\nstderr %q; want 1 event, at position 0, in 1 stream", code, stdout, stderr)
	}
	s, err = eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	appendOne("gone")
	require.NoError(t, s.Tombstone(t.Context(), "gone", eventbus.Any))
	appendOne("soft")
	require.NoError(t, s.Delete(t.Context(), "soft", eventbus.Any))
	require.NoError(t, s.SetStreamMetadata(t.Context(), "bare", eventbus.StreamMetadata{MaxCount: 1}))
	require.NoError(t, s.Close())
	code, stdout, stderr = runCmd(t, "inspect", dir)
	require.Equal(t, 0, code, stderr)
	rows := strings.Split(stdout, "\n")
	for stream, want := range map[string]string{"live": " live", "gone": " tombstoned", "soft": " deleted"} {
		if !slices.ContainsFunc(rows, func(row string) bool { return strings.HasPrefix(row, stream+" ") && strings.HasSuffix(row, want) }) {
			t.Errorf("eventbus inspect: no row of stream %s ends with %q:\n%s", stream, want, stdout)
		}
	}
	if !strings.Contains(stdout, "\nand 1 more stream without events kept") {
		t.Errorf("eventbus inspect: want it to say that 1 more stream, bare, is not listed:\n%s", stdout)
	}
}

// TestStatsAfterRetention checks stats, inspect and verify on a store whose
// first segments retention deleted, which starts past position 0: every
// other test's store starts at 0, so a stats that printed the next
// position as the count of events passed them all, as did an inspect or
// a verify that did so, and each then counted the deleted events too.
func TestStatsAfterRetention(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200, RetainSize: 400})
	require.NoError(t, err)
	for i := range 10 {
		_, err := s.Append(t.Context(), fmt.Sprint("order-", i), eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{"n":1}`)})
		require.NoError(t, err)
	}
	st := s.Stats()
	require.NoError(t, s.Close())
	require.Positive(t, st.FirstPosition, "retention deleted nothing: the test made no case")
	events := st.NextPosition - st.FirstPosition
	got := stats(t, dir)
	want := []string{fmt.Sprint(st.FirstPosition), fmt.Sprint(st.NextPosition), fmt.Sprint(events)}
	if g := []string{got["first position"], got["next position"], got["events"]}; !slices.Equal(g, want) {
		t.Errorf("eventbus stats = %v; want first position, next position and events %v", got, want)
	}
	code, stdout, stderr := runCmd(t, "inspect", dir)
	if want := fmt.Sprintf("%d events (positions %d to %d), ", events, st.FirstPosition, st.NextPosition-1); code != 0 || !strings.HasPrefix(stdout, want) {
		t.Errorf("eventbus inspect: exit status %d, stdout\n%s\nstderr %q; want it to start with %q", code, stdout, stderr, want)
	}
	code, stdout, stderr = runCmd(t, "verify", dir)
	var verified uint64
	if _, err := fmt.Sscanf(stdout, "ok: %d ", &verified); code != 0 || err != nil || verified != events {
		t.Errorf("eventbus verify: exit status %d, stdout\n%s\nstderr %q; want it to verify %d events", code, stdout, stderr, events)
	}
}

// stats returns what eventbus stats prints of the store in dir, by name,
// checking that it prints each on a line, its name left and its number
// right-aligned in a column of their own: it printed them after a tab, so
// that in a terminal the numbers of the short names and those of the
// long ones (first position) stood in different columns.
func stats(t *testing.T, dir string) map[string]string {
	t.Helper()
	code, stdout, stderr := runCmd(t, "stats", dir)
	require.Equal(t, 0, code, stderr)
	got := map[string]string{}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for _, line := range lines {
		i := strings.LastIndex(line, " ")
		name, n := strings.TrimRight(line[:max(i, 0)], " "), line[i+1:]
		if _, err := strconv.ParseUint(n, 10, 64); err != nil || name == "" || len(line) != len(lines[0]) || strings.Contains(line, "\t") {
			t.Errorf("eventbus stats printed line %q, want a name and a number, that number's end under the others:\n%s", line, stdout)
		}
		got[name] = n
	}
	return got
}

func TestCorruptStore(t *testing.T) {
	dir, seg := newStore(t)
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	b[60] ^= 1 // inside the first record
	require.NoError(t, os.WriteFile(seg, b, 0o644))

	code, _, stderr := runCmd(t, "verify", dir)
	if code != 1 || !strings.Contains(stderr, "offset 32") || !strings.Contains(stderr, seg) {
		t.Errorf("verify of a damaged store: exit status %d, stderr %q; want 1 naming %s at offset 32", code, stderr, seg)
	}
	code, stdout, stderr := runCmd(t, "repair", dir)
	if code != 0 || !strings.Contains(stdout, "repaired") {
		t.Errorf("repair: exit status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if code, _, stderr := runCmd(t, "verify", dir); code != 0 {
		t.Errorf("verify after repair: exit status %d, stderr %q", code, stderr)
	}
}

func TestBadUsage(t *testing.T) {
	foreign := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("hi"), 0o644))
	// Files named like segments, but not as the store names them: it
	// ignores them, and repair made a new store beside them. Upper-case
	// hex digits too, which the store never writes.
	segLike := t.TempDir()
	segLikeNames := []string{"seg-2024.log", "seg-000000000000000g.log", "seg-00000000000000001.log", "seg-000000000000000A.log"}
	for _, name := range segLikeNames {
		require.NoError(t, os.WriteFile(filepath.Join(segLike, name), []byte("hi"), 0o644))
	}
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "usage"},
		{[]string{"frobnicate", foreign}, 2, "unknown command"},
		{[]string{"inspect"}, 2, "want one store directory"},
		{[]string{"inspect", filepath.Join(foreign, "missing")}, 1, "no such file or directory"},
		{[]string{"verify", foreign}, 1, "not an eventbus store"},
		{[]string{"repair", foreign}, 1, "not an eventbus store"},
		{[]string{"inspect", segLike}, 1, "not an eventbus store"},
		{[]string{"repair", segLike}, 1, "not an eventbus store"},
		{[]string{"tail", "-n", "0", foreign}, 2, "-n must be positive"},
		{[]string{"tail", "-n", "-3", foreign}, 2, "-n must be positive"},
		{[]string{"read", "-limit", "-1", foreign}, 2, "-limit must not be negative"},
		// From an unset shell variable: read -stream "$S" printed every
		// stream's events.
		{[]string{"read", "-stream", "", foreign}, 2, "-stream must name a stream"},
		{[]string{"tail", "-stream=", foreign}, 2, "-stream must name a stream"},
	}
	for _, tt := range tests {
		code, _, stderr := runCmd(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.stderr) {
			t.Errorf("eventbus %v: exit status %d, stderr %q; want %d and %q", tt.args, code, stderr, tt.code, tt.stderr)
		}
	}
	if entries, err := os.ReadDir(segLike); err != nil || len(entries) != len(segLikeNames) {
		t.Errorf("eventbus repair of a directory that is not a store changed it: %v, %v; want its %d files only", entries, err, len(segLikeNames))
	}
}

// TestHelp checks that asking for help prints the commands and what each
// does, and succeeds: eventbus -h used to fail with "want one store
// directory", taking -h for a command.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help", "help"} {
		code, stdout, stderr := runCmd(t, arg)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "inspect DIR") || !strings.Contains(stdout, "exit status 1 on damage") {
			t.Errorf("eventbus %s: exit status %d, stdout %q, stderr %q; want 0 and the commands described", arg, code, stdout, stderr)
		}
	}
	code, stdout, _ := runCmd(t, "tail", "-h")
	if code != 0 || !strings.Contains(stdout, "usage: eventbus tail [flags] DIR") {
		t.Errorf("eventbus tail -h: exit status %d, stdout %q; want 0 and its usage", code, stdout)
	}
}

// TestForeignFlags checks that a command refuses the flags of another
// command, which it used to accept and ignore: read -n 5 printed every
// event, inspect -stream every stream. A flag after the store directory,
// where parsing stops, is named, and the usage printed is the command's,
// with its flags: it was the general usage, which lists no flags.
func TestForeignFlags(t *testing.T) {
	dir, _ := newStore(t)
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"read", "-n", "2", dir}, "flag provided but not defined: -n"},
		{[]string{"tail", "-limit", "2", dir}, "flag provided but not defined: -limit"},
		{[]string{"tail", "-from", "2", dir}, "flag provided but not defined: -from"},
		{[]string{"inspect", "-stream", "order-1", dir}, "flag provided but not defined: -stream"},
		{[]string{"frobnicate", "-n", "2", dir}, "unknown command"},
		{[]string{"read", dir, "-stream", "order-1"}, "want one store directory, after the flags, not -stream after it\nusage: eventbus read [flags] DIR"},
		{[]string{"tail", dir, "extra", "-n", "2"}, "want one store directory, after the flags, not -n after it\nusage: eventbus tail [flags] DIR"},
		{[]string{"read"}, "want one store directory, after the flags\nusage: eventbus read [flags] DIR"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.stderr) || stdout != "" {
			t.Errorf("eventbus %v: exit status %d, stdout %q, stderr %q; want 2, nothing printed, and %q", tt.args, code, stdout, stderr, tt.stderr)
		}
	}
	code, stdout, _ := runCmd(t, "read", "-h")
	if code != 0 || !strings.Contains(stdout, "-limit") || strings.Contains(stdout, "-n int") {
		t.Errorf("eventbus read -h: exit status %d, stdout %q; want the flags of read only", code, stdout)
	}
}

// TestProgress checks that progress stays quiet for the first second of an
// operation, then prints at most once a second, and always its final line
// once it has printed one. Time is fake, in a synctest bubble.
func TestProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out bytes.Buffer
		p := newProgress(&out, "reading")
		p.show("1 of 3", false)
		p.show("3 of 3", true)
		require.Empty(t, out.String(), "an operation done within a second prints nothing")

		p = newProgress(&out, "reading")
		time.Sleep(time.Second)
		p.show("1 of 3", false)
		p.show("2 of 3", false) // within the second after the last line
		p.show("3 of 3", true)
		require.Equal(t, "reading: 1 of 3\nreading: 3 of 3\n", out.String())
	})
}

// TestMissingStream checks that read and tail of a stream with no events to
// read fail: they printed nothing and exited 0, so a misspelt stream name
// passed for an empty stream, while a tombstoned one failed.
func TestMissingStream(t *testing.T) {
	dir, _ := newStore(t)
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	require.NoError(t, s.Delete(t.Context(), "user-1", eventbus.Any))
	require.NoError(t, s.Tombstone(t.Context(), "order-2", eventbus.Any))
	require.NoError(t, s.SetStreamMetadata(t.Context(), "order-3", eventbus.StreamMetadata{MaxCount: 3}))
	require.NoError(t, s.Close())
	tests := []struct {
		stream, stderr string
	}{
		{"order-9", `no stream "order-9"`},
		{"order-3", `no stream "order-3"`}, // metadata only
		{"user-1", `stream "user-1" is deleted`},
		{"order-2", "stream deleted"}, // tombstoned
	}
	for _, tt := range tests {
		for _, cmd := range []string{"read", "tail"} {
			code, stdout, stderr := runCmd(t, cmd, "-stream", tt.stream, dir)
			if code != 1 || stdout != "" || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("eventbus %s -stream %s: exit status %d, stdout %q, stderr %q; want 1, nothing printed, and %q", cmd, tt.stream, code, stdout, stderr, tt.stderr)
			}
		}
	}
	if code, stdout, stderr := runCmd(t, "read", "-stream", "order-1", "-from", "5", dir); code != 0 || stdout != "" {
		t.Errorf("eventbus read -stream order-1 -from 5 (past its end): exit status %d, stdout %q, stderr %q; want 0 and nothing", code, stdout, stderr)
	}
}

// TestDataNotUTF8 checks that read prints data that is valid JSON but for
// strings that are not UTF-8 as base64: it printed it as JSON, so the line
// was not valid UTF-8 and a JSON decoder read other bytes than the event's.
func TestDataNotUTF8(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	data := []byte("\"\xff\xfe\"")
	_, err = s.Append(t.Context(), "order-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: data})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "read", dir)
	require.Equal(t, 0, code, stderr)
	require.True(t, utf8.ValidString(stdout), "read printed a line that is not UTF-8: %q", stdout)
	var e struct {
		Data       json.RawMessage `json:"data"`
		DataBase64 []byte          `json:"dataBase64"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &e))
	require.Equal(t, data, e.DataBase64, "read printed %q", stdout)
}

// failingWriter fails every write, as a full disk does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// TestOutputFails checks that a command whose output cannot be written
// exits with status 1 and says why: stats, inspect, verify and repair
// ignored the error and exited 0, so a script saving their output to a
// full disk took an empty file for their result.
func TestOutputFails(t *testing.T) {
	dir, _ := newStore(t)
	for _, cmd := range []string{"inspect", "stats", "verify", "read", "tail", "repair"} {
		var stderr bytes.Buffer
		code := run(t.Context(), []string{cmd, dir}, failingWriter{}, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), syscall.ENOSPC.Error()) {
			t.Errorf("eventbus %s with an output that fails: exit status %d, stderr %q; want 1 and the error", cmd, code, stderr.String())
		}
	}
}

// TestHelpOutputFails checks that eventbus help exits with status 1 and
// says why when its output cannot be written: it exited 0, so a script
// saving the usage to a full disk took an empty file for it.
func TestHelpOutputFails(t *testing.T) {
	for _, arg := range []string{"help", "-h"} {
		var stderr bytes.Buffer
		code := run(t.Context(), []string{arg}, failingWriter{}, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), syscall.ENOSPC.Error()) {
			t.Errorf("eventbus %s with an output that fails: exit status %d, stderr %q; want 1 and the error", arg, code, stderr.String())
		}
	}
}

// inspectStreams returns what eventbus inspect prints of a store holding
// an event in each stream of names, and its lines: the summary, an empty
// line, the header, then a row a stream.
func inspectStreams(t *testing.T, names ...string) (stdout string, lines []string) {
	t.Helper()
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	for _, name := range names {
		_, err := s.Append(t.Context(), name, eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(`{}`)})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "inspect", dir)
	require.Equal(t, 0, code, stderr)
	lines = strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	require.Len(t, lines, 3+len(names), "eventbus inspect printed\n%s", stdout)
	return stdout, lines
}

// TestInspectOddStreamNames checks that inspect prints a stream name
// holding a space, a control character (tab, newline, ESC) or another
// character that is not printable quoted, as strconv.Quote does, one row
// a stream: it printed such names as they were, so a newline split a row
// in two, a tab or space shifted the columns, and an ESC sequence in a
// store written by another program reached the user's terminal.
func TestInspectOddStreamNames(t *testing.T) {
	names := []string{"plain-1", "tab\there", "two\nlines", "esc\x1b[2Jclear", "with space", "rtl\u202eevil", `"quoted"`, "café"}
	stdout, lines := inspectStreams(t, names...)
	for _, r := range stdout {
		if r != '\n' && !strconv.IsPrint(r) {
			t.Errorf("eventbus inspect printed %q, which is not printable, in\n%s", r, stdout)
		}
	}
	for _, name := range names {
		want := name
		if name != "plain-1" && name != "café" {
			want = strconv.Quote(name)
		}
		if !slices.ContainsFunc(lines[3:], func(row string) bool { return strings.HasPrefix(row, want+" ") }) {
			t.Errorf("eventbus inspect has no row for stream %q, as %s:\n%s", name, want, stdout)
		}
	}
}

// TestMetadataNotUTF8 checks that read prints the metadata entries whose
// key or value is not UTF-8 under metadataBase64, each as base64 bytes, and
// the others under metadata: encoding/json printed every bad byte as
// U+FFFD, so read showed other metadata than the event's, and two events
// whose metadata differed looked the same.
func TestMetadataNotUTF8(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	md := eventbus.Metadata{"ok": "fine", "bad-value": "\xff\xfe", "bad-key\xff": "v"}
	_, err = s.Append(t.Context(), "order-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Metadata: md, Data: []byte(`{}`)})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	for _, cmd := range []string{"read", "tail"} {
		code, stdout, stderr := runCmd(t, cmd, dir)
		require.Equal(t, 0, code, stderr)
		require.True(t, utf8.ValidString(stdout), "eventbus %s printed a line that is not UTF-8: %q", cmd, stdout)
		var e struct {
			Metadata       map[string]string `json:"metadata"`
			MetadataBase64 []struct {
				Key   []byte `json:"key"`
				Value []byte `json:"value"`
			} `json:"metadataBase64"`
		}
		require.NoError(t, json.Unmarshal([]byte(stdout), &e))
		got := eventbus.Metadata{}
		for k, v := range e.Metadata {
			got[k] = v
		}
		for _, kv := range e.MetadataBase64 {
			got[string(kv.Key)] = string(kv.Value)
		}
		require.Equal(t, md, got, "eventbus %s printed %s", cmd, stdout)
		require.Equal(t, map[string]string{"ok": "fine"}, e.Metadata, "eventbus %s printed %s", cmd, stdout)
	}
}

// TestEncodingNotUTF8 checks that read prints an Encoding that is not
// UTF-8 as base64, under encodingBase64: the store keeps Encoding as it is
// given, and read printed U+FFFD for each bad byte, so the line named
// another encoding than the event's.
func TestEncodingNotUTF8(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	_, err = s.Append(t.Context(), "order-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Encoding: "zstd\xff", Data: []byte("x")})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "read", dir)
	require.Equal(t, 0, code, stderr)
	var e struct {
		Encoding       *string `json:"encoding"`
		EncodingBase64 []byte  `json:"encodingBase64"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &e))
	require.Nil(t, e.Encoding, "read printed %s", stdout)
	require.Equal(t, "zstd\xff", string(e.EncodingBase64), "read printed %s", stdout)
}

// TestReadEnvelope checks that read prints an event's correlation and
// causation IDs, and its data as base64, with its encoding, when the
// event is encoded (compressed, say) though its bytes happen to be valid
// JSON: no test had an event with a causation ID, or encoded data that
// is JSON, so a read that left out causationId, or printed such data as
// "data", as if it were the payload itself, passed every test.
func TestReadEnvelope(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	want := eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Encoding: "deflate", CorrelationID: eventbus.NewID(), CausationID: eventbus.NewID(), Data: []byte(`{"n":1}`)}
	_, err = s.Append(t.Context(), "order-1", eventbus.Any, want)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "read", dir)
	require.Equal(t, 0, code, stderr)
	var got struct {
		Encoding      string          `json:"encoding"`
		CorrelationID eventbus.ID     `json:"correlationId"`
		CausationID   eventbus.ID     `json:"causationId"`
		Data          json.RawMessage `json:"data"`
		DataBase64    []byte          `json:"dataBase64"`
		DataError     string          `json:"dataError"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &got))
	// Its data is not deflated, as its encoding says.
	if got.Encoding != want.Encoding || got.CorrelationID != want.CorrelationID || got.CausationID != want.CausationID ||
		got.Data != nil || string(got.DataBase64) != string(want.Data) || !strings.Contains(got.DataError, "deflate") {
		t.Errorf("eventbus read printed %s; want encoding %q, correlationId %v, causationId %v, dataBase64 of %s and a dataError", stdout, want.Encoding, want.CorrelationID, want.CausationID, want.Data)
	}
}

// TestInspectReadLimits checks that inspect shows, beside a stream's
// state, what hides some of its events from read -stream: its metadata
// (max count, max age) and a soft delete before its current life. It
// showed "live" only, so a stream listed with 10 events read as 3, with
// nothing saying why.
func TestInspectReadLimits(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	appendN := func(stream string, n int) {
		t.Helper()
		for range n {
			_, err := s.Append(t.Context(), stream, eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(`{}`)})
			require.NoError(t, err)
		}
	}
	appendN("counted", 10)
	require.NoError(t, s.SetStreamMetadata(t.Context(), "counted", eventbus.StreamMetadata{MaxCount: 3}))
	appendN("aged", 1)
	require.NoError(t, s.SetStreamMetadata(t.Context(), "aged", eventbus.StreamMetadata{MaxAge: time.Hour}))
	appendN("reborn", 3)
	require.NoError(t, s.Delete(t.Context(), "reborn", eventbus.Any))
	appendN("reborn", 2)
	appendN("plain", 1)
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "inspect", dir)
	require.Equal(t, 0, code, stderr)
	for stream, want := range map[string]string{
		"counted": "live, max count 3",
		"aged":    "live, max age 1h0m0s",
		"reborn":  "live, from revision 3",
		"plain":   "live",
	} {
		i := slices.IndexFunc(strings.Split(stdout, "\n"), func(row string) bool { return strings.HasPrefix(row, stream+" ") })
		if i < 0 || !strings.HasSuffix(strings.Split(stdout, "\n")[i], " "+want) {
			t.Errorf("eventbus inspect: stream %s does not end its row with %q:\n%s", stream, want, stdout)
		}
	}
}

// TestVerifyIncompleteRecord checks that verify, on a store whose last
// segment ends in an incomplete record (a crash in the middle of a write),
// says so and how many bytes the next open for writing cuts: it said
// "every checksum verified" only, though those bytes were not, and repair
// then cut them saying "nothing to repair".
func TestVerifyIncompleteRecord(t *testing.T) {
	dir, seg := newStore(t)
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(seg, fi.Size()-5))
	code, stdout, stderr := runCmd(t, "verify", dir)
	if code != 0 || !strings.Contains(stdout, "ok: 5 events") || !strings.Contains(stdout, "incomplete record") {
		t.Errorf("eventbus verify of a store cut in its last record: exit status %d, stdout %q, stderr %q; want 0, 5 events, and the incomplete record", code, stdout, stderr)
	}
	dir, _ = newStore(t)
	if _, stdout, _ = runCmd(t, "verify", dir); strings.Contains(stdout, "incomplete") {
		t.Errorf("eventbus verify of a sound store: %q", stdout)
	}
}

// TestRepairIncompleteRecord checks that repair, on a store whose last
// segment ends in an incomplete record, says that it cut it and how many
// bytes: opening the store for writing cuts it, keeping no copy, and
// repair said "nothing to repair" while the segment got shorter.
func TestRepairIncompleteRecord(t *testing.T) {
	dir, seg := newStore(t)
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(seg, fi.Size()-5))
	_, verified, _ := runCmd(t, "verify", dir)
	code, stdout, stderr := runCmd(t, "repair", dir)
	after, err := os.Stat(seg)
	require.NoError(t, err)
	cut := fi.Size() - 5 - after.Size()
	require.Positive(t, cut, "repair cut nothing")
	want := fmt.Sprintf("cut an incomplete final record of %d bytes", cut)
	if code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("eventbus repair of a store cut in its last record: exit status %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
	}
	if !strings.Contains(verified, fmt.Sprintf("incomplete record of %d bytes", cut)) {
		t.Errorf("eventbus verify said %q, repair cut %d bytes", verified, cut)
	}
	if code, stdout, _ := runCmd(t, "repair", dir); code != 0 || stdout != "nothing to repair\n" {
		t.Errorf("eventbus repair again: exit status %d, stdout %q; want 0 and nothing to repair", code, stdout)
	}
}

// TestCommandHelp checks that eventbus <command> -h prints the command's
// usage, what it does and its flags on standard output and succeeds, as
// eventbus -h does: it printed them on standard error, so that
// "eventbus read -h | less" showed nothing, said nothing of what the
// command does, and offered "[flags]" to commands that take none.
func TestCommandHelp(t *testing.T) {
	tests := []struct {
		cmd  string
		want []string
	}{
		{"inspect", []string{"usage: eventbus inspect DIR\n", "event counts"}},
		{"stats", []string{"usage: eventbus stats DIR\n", "totals"}},
		{"verify", []string{"usage: eventbus verify DIR\n", "checksum"}},
		{"repair", []string{"usage: eventbus repair DIR\n", "keeping a copy"}},
		{"read", []string{"usage: eventbus read [flags] DIR\n", "JSON lines", "-limit", "-from", "-stream", "data is printed decompressed", "dataBase64", "dataError"}},
		{"tail", []string{"usage: eventbus tail [flags] DIR\n", "last events", "-n int", "-stream", "data is printed decompressed", "dataBase64", "dataError"}},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, tt.cmd, "-h")
		if code != 0 || stderr != "" {
			t.Errorf("eventbus %s -h: exit status %d, stderr %q; want 0 and nothing", tt.cmd, code, stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("eventbus %s -h printed %q; want it to contain %q", tt.cmd, stdout, w)
			}
		}
	}
	// Bad usage still goes to standard error.
	code, stdout, stderr := runCmd(t, "read", "-bogus", "x")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: eventbus read [flags] DIR") {
		t.Errorf("eventbus read -bogus: exit status %d, stdout %q, stderr %q; want 2 and the usage on stderr", code, stdout, stderr)
	}
}

// countingWriter counts the writes made to it.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestOutputBuffered checks that read and inspect buffer their output: they
// made a write, a system call on a file or pipe, for each event or line,
// so printing a store of millions of events made millions of them.
func TestOutputBuffered(t *testing.T) {
	dir, _ := newStore(t)
	for _, cmd := range []string{"read", "inspect"} {
		var out countingWriter
		var stderr bytes.Buffer
		code := run(t.Context(), []string{cmd, dir}, &out, &stderr)
		require.Equal(t, 0, code, stderr.String())
		if lines := strings.Count(out.String(), "\n"); out.writes != 1 {
			t.Errorf("eventbus %s printed %d lines in %d writes; want 1", cmd, lines, out.writes)
		}
	}
}

// TestRepairStaleSegment checks that repair, on a store holding a segment
// that retention dropped but failed to delete, which opening for writing
// deletes, does not count it as an incomplete record it cut: it compared
// the size of every segment file before and after.
func TestRepairStaleSegment(t *testing.T) {
	dir := t.TempDir()
	// Under retention, which keeps everything here, each segment starts
	// with the state of every stream: the store may start at any.
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200, RetainAge: time.Hour})
	require.NoError(t, err)
	for i := range 6 {
		_, err := s.Append(t.Context(), fmt.Sprint("order-", i), eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{"n":1}`)})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	require.Greater(t, len(segs), 2)
	// As retention leaves a store that failed to delete the first.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "START"), []byte("2\n"), 0o644))
	code, stdout, stderr := runCmd(t, "repair", dir)
	if code != 0 || stdout != "nothing to repair\n" {
		t.Errorf("eventbus repair of a store with a stale segment: exit status %d, stdout %q, stderr %q; want 0 and nothing to repair", code, stdout, stderr)
	}
	_, err = os.Stat(segs[0])
	require.ErrorIs(t, err, os.ErrNotExist, "the stale segment was not deleted: the test made no case")
}

// TestReadEscapesControls checks that read and tail escape, as \uXXXX, the
// characters that are not printable which encoding/json leaves as they
// are: C1 controls such as U+009B, a control sequence introducer to many
// terminals, and bidirectional overrides such as U+202E, which reorder what
// the terminal shows. They reached the terminal of a user reading a store
// another program wrote. The JSON still decodes to the same values.
func TestReadEscapesControls(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	stream := "order-\u202e1"
	md := eventbus.Metadata{"k\u009b": "\u009b2J\u2066x\x7f", "plain": "café 😀"}
	data := []byte("{\"note\":\"\u009b[31m\u202eevil\U000e0001\"}")
	_, err = s.Append(t.Context(), stream, eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Metadata: md, Data: data})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	for _, cmd := range []string{"read", "tail"} {
		code, stdout, stderr := runCmd(t, cmd, dir)
		require.Equal(t, 0, code, stderr)
		for _, r := range stdout {
			if r != '\n' && !strconv.IsPrint(r) {
				t.Errorf("eventbus %s printed %U, which is not printable, in %s", cmd, r, stdout)
			}
		}
		var e struct {
			Stream   string            `json:"stream"`
			Metadata map[string]string `json:"metadata"`
			Data     json.RawMessage   `json:"data"`
		}
		require.NoError(t, json.Unmarshal([]byte(stdout), &e))
		require.Equal(t, stream, e.Stream)
		require.Equal(t, map[string]string(md), e.Metadata)
		var got, want any
		require.NoError(t, json.Unmarshal(e.Data, &got))
		require.NoError(t, json.Unmarshal(data, &want))
		require.Equal(t, want, got, "eventbus %s printed %s", cmd, stdout)
		require.Contains(t, stdout, "café 😀", "eventbus %s escaped printable characters", cmd)
	}
}

// TestInvalidStreamName checks that read and tail refuse a -stream that
// names no stream the store can hold (not UTF-8, or over 1,024 bytes) as
// bad usage, exit status 2, as they do an empty one, whatever DIR is: they
// opened the store and failed with the store's error, exit status 1, as if
// the store had failed.
func TestInvalidStreamName(t *testing.T) {
	dir, _ := newStore(t)
	foreign := t.TempDir()
	for _, cmd := range []string{"read", "tail"} {
		for _, stream := range []string{"order-\xff", strings.Repeat("o", 1025)} {
			for _, d := range []string{dir, foreign} {
				code, stdout, stderr := runCmd(t, cmd, "-stream", stream, d)
				if code != 2 || stdout != "" || !strings.Contains(stderr, "-stream") {
					t.Errorf("eventbus %s -stream %.30q... %s: exit status %d, stdout %q, stderr %q; want 2, nothing printed, and a word on -stream", cmd, stream, d, code, stdout, stderr)
				}
			}
		}
	}
	// The longest name the store takes is no bad usage.
	if code, _, stderr := runCmd(t, "read", "-stream", strings.Repeat("o", 1024), dir); code != 1 || !strings.Contains(stderr, "no stream") {
		t.Errorf("eventbus read -stream <1,024 bytes>: exit status %d, stderr %q; want 1 and no stream", code, stderr)
	}
}

// TestHelpCommand checks that eventbus help <command> prints the usage of
// the command, as eventbus <command> -h does, and that help for a command
// that does not exist is bad usage: it printed the general usage either
// way and exited 0, so the flags of read could not be found by asking.
// Help help, which called help an unknown command, prints the usage.
func TestHelpCommand(t *testing.T) {
	for _, cmd := range []string{"inspect", "stats", "verify", "read", "tail", "repair"} {
		wantCode, want, wantStderr := runCmd(t, cmd, "-h")
		code, stdout, stderr := runCmd(t, "help", cmd)
		if code != wantCode || stdout != want || stderr != wantStderr {
			t.Errorf("eventbus help %s: exit status %d, stdout %q, stderr %q; want %d, %q and %q, as eventbus %s -h", cmd, code, stdout, stderr, wantCode, want, wantStderr, cmd)
		}
	}
	for _, args := range [][]string{{"help", "frobnicate"}, {"help", "read", "tail"}} {
		code, stdout, stderr := runCmd(t, args...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: eventbus") {
			t.Errorf("eventbus %v: exit status %d, stdout %q, stderr %q; want 2, nothing printed, and the usage", args, code, stdout, stderr)
		}
	}
	// The usage lists help as a command, so help help is no unknown one.
	_, want, _ := runCmd(t, "help")
	if code, stdout, stderr := runCmd(t, "help", "help"); code != 0 || stdout != want || stderr != "" {
		t.Errorf("eventbus help help: exit status %d, stdout %q, stderr %q; want 0 and the usage, as eventbus help", code, stdout, stderr)
	}
	if code := run(t.Context(), []string{"help", "read"}, failingWriter{}, &bytes.Buffer{}); code != 1 {
		t.Errorf("eventbus help read, output failing: exit status %d; want 1", code)
	}
}

// TestStoreWithoutSegments checks verify and repair of a store whose
// segments are all gone but for its START file, which names the first:
// RepairFileStore repairs it, so the commands must not call it no store.
func TestStoreWithoutSegments(t *testing.T) {
	dir, seg := newStore(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "START"), []byte("1\n"), 0o644))
	require.NoError(t, os.Remove(seg))

	code, _, stderr := runCmd(t, "verify", dir)
	if code != 1 || !strings.Contains(stderr, "missing") || !strings.Contains(stderr, "eventbus repair") {
		t.Errorf("verify of a store whose segments are missing: exit status %d, stderr %q; want 1, the damage and the advice to repair", code, stderr)
	}
	code, stdout, stderr := runCmd(t, "repair", dir)
	if code != 0 || !strings.Contains(stdout, "repaired") {
		t.Errorf("repair of a store whose segments are missing: exit status %d, stdout %q, stderr %q; want 0 and repaired", code, stdout, stderr)
	}
	if code, _, stderr := runCmd(t, "verify", dir); code != 0 {
		t.Errorf("verify after repair: exit status %d, stderr %q", code, stderr)
	}
}

// TestInspectLongStreamNames checks that inspect's columns stay aligned
// for a stream name longer than the STREAM column's 30 characters: each
// row's STATE starts under the header's, as do its numbers' ends under
// theirs. It printed the names padded to 30, so a longer one pushed the
// rest of its row to the right.
func TestInspectLongStreamNames(t *testing.T) {
	stdout, lines := inspectStreams(t, "a", strings.Repeat("long-stream-name-", 3))
	header := lines[2]
	for _, row := range lines[3:] {
		for _, col := range []struct{ head, cell string }{{"EVENTS", " 1 "}, {"STATE", " live"}} {
			want := strings.Index(header, col.head) + len(col.head)
			got := strings.Index(row, col.cell) + len(col.cell)
			if col.head == "STATE" {
				want, got = strings.Index(header, col.head), strings.Index(row, col.cell)+1
			} else {
				got-- // the space after the number
			}
			if got != want {
				t.Errorf("eventbus inspect: %s of row %q at %d, want %d under the header:\n%s", col.head, row, got, want, stdout)
			}
		}
	}
}

// TestLastSegmentMissing checks verify and repair of a store whose last
// segment files are gone, some or all of them: verify must fail naming
// the store's last segment, and advise a repair that accepts the loss
// rather than one that cuts damage; repair must say where the store now
// ends, and that the next appends take the positions of the events lost.
// A store left with its LAST file alone was "not an eventbus store".
func TestLastSegmentMissing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		removed int
		next    int // the position where the store ends once repaired
	}{
		{"last", 1, 4},
		{"every", 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, segs := segmentedStore(t)
			require.Len(t, segs, 3)
			gone := segs[len(segs)-tc.removed:]
			for _, seg := range gone {
				require.NoError(t, os.Remove(seg))
			}

			code, _, stderr := runCmd(t, "verify", dir)
			if code != 1 || !strings.Contains(stderr, filepath.Base(segs[2])) || !strings.Contains(stderr, "accepts the loss") {
				t.Errorf("verify without %s: exit status %d, stderr %q; want 1, %s named and a repair that accepts the loss", filepath.Base(gone[0]), code, stderr, filepath.Base(segs[2]))
			}
			code, stdout, stderr := runCmd(t, "repair", dir)
			want := fmt.Sprintf("the store now ends at position %d", tc.next)
			if code != 0 || !strings.Contains(stdout, "repaired") || !strings.Contains(stdout, want) || !strings.Contains(stdout, "take their positions") {
				t.Errorf("repair without %s: exit status %d, stdout %q, stderr %q; want 0 and %q, positions taken again", filepath.Base(gone[0]), code, stdout, stderr, want)
			}
			if code, _, stderr := runCmd(t, "verify", dir); code != 0 {
				t.Errorf("verify after repair: exit status %d, stderr %q", code, stderr)
			}
		})
	}
}

// TestFirstSegmentMissing checks verify and repair of a store whose
// first segment files are gone: verify must name the first one missing
// and advise a repair that accepts the loss; repair must keep the events
// of the segments left and say where the store now starts. Verify said
// that the revision of the first event left was wrong, and advised a
// repair that cuts the damage, which moved every segment aside and left
// the store empty.
func TestFirstSegmentMissing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		removed int
		missing string // what verify says is missing
	}{
		{"first", 1, "segment seg-0000000000000001.log is missing"},
		{"first two", 2, "segments seg-0000000000000001.log to seg-0000000000000002.log are missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, segs := segmentedStore(t)
			require.Len(t, segs, 3)
			for _, seg := range segs[:tc.removed] {
				require.NoError(t, os.Remove(seg))
			}

			code, _, stderr := runCmd(t, "verify", dir)
			if code != 1 || !strings.Contains(stderr, tc.missing) || !strings.Contains(stderr, "accepts the loss") {
				t.Errorf("verify without %s: exit status %d, stderr %q; want 1, %q and a repair that accepts the loss", filepath.Base(segs[0]), code, stderr, tc.missing)
			}
			code, stdout, stderr := runCmd(t, "repair", dir)
			first := 2 * tc.removed
			for _, want := range []string{"repaired", fmt.Sprintf("the store now starts at position %d", first), "the store now ends at position 6"} {
				if code != 0 || !strings.Contains(stdout, want) {
					t.Errorf("repair without %s: exit status %d, stdout %q, stderr %q; want 0 and %q", filepath.Base(segs[0]), code, stdout, stderr, want)
				}
			}
			code, stdout, stderr = runCmd(t, "verify", dir)
			if want := fmt.Sprintf("ok: %d events", 6-first); code != 0 || !strings.Contains(stdout, want) {
				t.Errorf("verify after repair: exit status %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
			}
			code, stdout, stderr = runCmd(t, "inspect", dir)
			if want := fmt.Sprintf("%d-5", first); code != 0 || !strings.Contains(stdout, want) {
				t.Errorf("inspect after repair: exit status %d, stdout %q, stderr %q; want 0 and revisions %s", code, stdout, stderr, want)
			}
		})
	}
}

// TestRepairSaysWhereARetainedStoreStarts empties the first segment file
// of a store whose later segments start with the state of the streams, as
// under retention: repair moves it aside, and the store starts at the next
// segment, whose events it keeps; it must say where the store now starts,
// as it does for a store without retention. It said only where the store
// ends, as if the events lost were cut from its end: it took a changed
// START file, which such a store does not need, for the sign of a new
// start.
func TestRepairSaysWhereARetainedStoreStarts(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{MaxSegmentSize: 200, RetainSize: 1 << 40})
	require.NoError(t, err)
	for s.Stats().Segments < 3 {
		_, err := s.Append(t.Context(), "order-1", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "order.placed", Data: []byte(`{"n":1}`)})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())
	segs, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(segs[0], nil, 0o644))

	code, stdout, stderr := runCmd(t, "repair", dir)
	s, err = eventbus.OpenFileStore(dir, &eventbus.FileStoreOptions{ReadOnly: true})
	require.NoError(t, err, "open once repaired")
	first := s.Stats().FirstPosition
	require.NoError(t, s.Close())
	require.NotZero(t, first, "the position the store starts at once repaired")
	if want := fmt.Sprintf("the store now starts at position %d", first); code != 0 || !strings.Contains(stdout, want) {
		t.Errorf("repair of an emptied %s: exit status %d, stdout %q, stderr %q; want 0 and %q", filepath.Base(segs[0]), code, stdout, stderr, want)
	}
}

// TestRepairSaysWhereTheStoreEnds flips a bit in a record of a store's one
// segment: repair cuts it and the sound records after it, and must say
// where the store now ends and that its next appends take the positions
// of the events cut. It said only where the copy was. And a damaged LAST
// file, with every segment there, is no loss of segments: verify must not
// say that segments are missing.
func TestRepairSaysWhereTheStoreEnds(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	var frames []int64
	seg := filepath.Join(dir, "seg-0000000000000001.log")
	for i := range 3 {
		fi, err := os.Stat(seg)
		require.NoError(t, err)
		frames = append(frames, fi.Size())
		_, err = s.Append(t.Context(), "s", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "t", Data: []byte(fmt.Sprintf(`{"n":%d}`, i))})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())

	last := filepath.Join(dir, "LAST")
	b, err := os.ReadFile(last)
	require.NoError(t, err)
	b[len(b)-2] ^= 1 // a digit of its checksum
	require.NoError(t, os.WriteFile(last, b, 0o644))
	code, _, stderr := runCmd(t, "verify", dir)
	if code != 1 || strings.Contains(stderr, "missing") || !strings.Contains(stderr, "LAST, which names its last segment, is damaged") {
		t.Errorf("verify with a damaged LAST: exit status %d, stderr %q; want 1, LAST damaged, no segment missing", code, stderr)
	}
	code, stdout, stderr := runCmd(t, "repair", dir)
	if code != 0 || !strings.Contains(stdout, "the store now ends at position 3") {
		t.Errorf("repair of a damaged LAST: exit status %d, stdout %q, stderr %q; want 0, ending at 3", code, stdout, stderr)
	}

	b, err = os.ReadFile(seg)
	require.NoError(t, err)
	b[frames[1]+12] ^= 0x10
	require.NoError(t, os.WriteFile(seg, b, 0o644))
	code, stdout, stderr = runCmd(t, "repair", dir)
	for _, want := range []string{"repaired", "the store now ends at position 1: the events from there on, if any, were cut", "take their positions"} {
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("repair of a record of the last segment: exit status %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
		}
	}
	if code, _, stderr := runCmd(t, "verify", dir); code != 0 {
		t.Errorf("verify after repair: exit status %d, stderr %q", code, stderr)
	}
}

// order is the payload of a big event, which a Registry compresses.
type order struct {
	ID    int      `json:"id"`
	Lines []string `json:"lines"`
}

// binary is a payload that is not JSON, with a codec of its own.
type binary []byte

type binaryCodec struct{}

func (binaryCodec) Marshal(v any) ([]byte, error)      { return v.(binary), nil }
func (binaryCodec) Unmarshal(data []byte, v any) error { *v.(*binary) = bytes.Clone(data); return nil }

// TestReadCompressed checks that read and tail show the data of an event
// that a Registry compressed as the codec wrote it, JSON as JSON, with its
// encoding: they printed the deflated bytes in base64, unreadable exactly
// for the big events. Data of an encoding the command does not know is
// printed as it is stored, with the reason.
func TestReadCompressed(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	r, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 64})
	require.NoError(t, err)
	require.NoError(t, eventbus.Register[order](r, &eventbus.TypeOptions{Name: "order.placed"}))
	require.NoError(t, eventbus.Register[binary](r, &eventbus.TypeOptions{Name: "blob", Codec: binaryCodec{}}))
	big := order{ID: 7, Lines: slices.Repeat([]string{"one widget"}, 20)}
	blob := binary(slices.Repeat([]byte{0, 1, 2, 0xff}, 50))
	var events []eventbus.EventData
	for _, v := range []any{big, blob} {
		e, err := r.Encode(v)
		require.NoError(t, err)
		require.Equal(t, "deflate", e.Encoding, "Encode(%T)", v)
		events = append(events, e)
	}
	zstd := eventbus.EventData{ID: eventbus.NewID(), Type: "blob", Encoding: "zstd", Data: []byte("not zstd")}
	_, err = s.Append(t.Context(), "order-7", eventbus.Any, append(events, zstd)...)
	require.NoError(t, err)
	require.NoError(t, s.Close())

	type line struct {
		Encoding   string          `json:"encoding"`
		Data       json.RawMessage `json:"data"`
		DataBase64 []byte          `json:"dataBase64"`
		DataError  string          `json:"dataError"`
	}
	bigJSON, err := json.Marshal(big)
	require.NoError(t, err)
	want := []line{
		{Encoding: "deflate", Data: bigJSON},
		{Encoding: "deflate", DataBase64: blob},
		{Encoding: "zstd", DataBase64: []byte("not zstd"), DataError: `eventbus: invalid argument: unknown Encoding "zstd"`},
	}
	for _, args := range [][]string{{"read", dir}, {"tail", dir}} {
		code, stdout, stderr := runCmd(t, args...)
		require.Equal(t, 0, code, stderr)
		var got []line
		for l := range strings.Lines(stdout) {
			var e line
			require.NoError(t, json.Unmarshal([]byte(l), &e), "a line of %s", args[0])
			got = append(got, e)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("eventbus %s printed\n%s\n(-want +got):\n%s", args[0], stdout, diff)
		}
	}
}

// TestInspectWideStreamNames checks that inspect's columns stay aligned
// in a terminal for stream names in Chinese, Japanese or Korean, whose
// characters take two columns each, and with a combining accent, which
// takes none: it padded names by their count of characters, so each row
// with such a name was pushed right by its count of wide characters.
func TestInspectWideStreamNames(t *testing.T) {
	names := map[string]int{ // name: its width in a terminal
		"order-1": 7,
		"用户-1":    6,
		"注文-長い名前のストリーム-3": 27,
		"주문-1":         6,
		"cafe\u0301-1": 6,
	}
	stdout, lines := inspectStreams(t, slices.Collect(maps.Keys(names))...)
	want := strings.Index(lines[2], "STATE")
	for _, row := range lines[3:] {
		name, rest, _ := strings.Cut(row, " ")
		w, ok := names[name]
		require.True(t, ok, "row %q names no stream", row)
		if got := w + 1 + strings.Index(rest, "live"); got != want {
			t.Errorf("eventbus inspect: STATE of row %q at column %d, want %d under the header:\n%s", row, got, want, stdout)
		}
	}
}

// TestReadNoHTMLEscapes checks that read prints <, > and & as they are:
// encoding/json escaped them for HTML, as \u003c, \u003e and \u0026, in
// stream names, metadata and data, where a user looking for a tag or a
// query string in the output would not find it.
func TestReadNoHTMLEscapes(t *testing.T) {
	dir := t.TempDir()
	s, err := eventbus.OpenFileStore(dir, nil)
	require.NoError(t, err)
	e := eventbus.EventData{ID: eventbus.NewID(), Type: "page.saved", Metadata: eventbus.Metadata{"query": "a=1&b=2"}, Data: []byte(`{"html":"<b>R&D</b>"}`)}
	_, err = s.Append(t.Context(), "r&d", eventbus.Any, e)
	require.NoError(t, err)
	require.NoError(t, s.Close())
	code, stdout, stderr := runCmd(t, "read", dir)
	require.Equal(t, 0, code, stderr)
	for _, want := range []string{`"stream":"r&d"`, `"metadata":{"query":"a=1&b=2"}`, `"data":{"html":"<b>R&D</b>"}`} {
		if !strings.Contains(stdout, want) {
			t.Errorf("eventbus read printed\n%s\nwant it to contain %s", stdout, want)
		}
	}
}
