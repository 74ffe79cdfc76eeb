package eventbus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/stretchr/testify/require"
)

// FuzzParseID checks that any string either fails to parse with ErrInvalid
// or round-trips through String, and that parsing never panics.
func FuzzParseID(f *testing.F) {
	f.Add(eventbus.NewID().String())
	f.Add("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	f.Add("81ARZ3NDEKTSV4RRFFQ69G5FAV") // first character out of range
	f.Add("")
	f.Add("01arz3ndektsv4rrffq69g5fav")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := eventbus.ParseID(s)
		if err != nil {
			return
		}
		if got := id.String(); got != strings.ToUpper(s) {
			t.Fatalf("ParseID(%q).String() = %q", s, got)
		}
	})
}

// FuzzTraceparent checks that WithTraceparent accepts only what it can
// carry back unchanged.
func FuzzTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	f.Fuzz(func(t *testing.T, tp string) {
		ctx, err := eventbus.WithTraceparent(context.Background(), tp)
		if err != nil {
			return
		}
		if got := eventbus.Traceparent(ctx); got != tp {
			t.Fatalf("Traceparent = %q, want %q", got, tp)
		}
	})
}

// TestIDsSortPastTheirTimeRange checks that the IDs of events an
// Options.Clock stamped outside the 48 bits of milliseconds that an ID
// holds still sort by their time, as ID's doc says: before 1970 (at the
// zero time, say), whose negative millisecond count wrapped around to the
// year 8921, after every ID of today; and after the year 10889, whose
// count must stop at the largest the bits hold, not lose its top bits.
func TestIDsSortPastTheirTimeRange(t *testing.T) {
	times := []time.Time{{}, time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}
	next := times
	clock := func() time.Time { return next[0] }
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Clock: clock})
	topic := newTopic[Order](t, b, "orders", nil)
	var ids []eventbus.ID
	subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
		ids = append(ids, e.ID)
		return nil
	}, nil)
	for range times {
		require.NoError(t, topic.Publish(context.Background(), Order{}))
		next = next[1:]
	}
	for i := 1; i < len(ids); i++ {
		require.Less(t, ids[i-1].String(), ids[i].String(), "the ID stamped at %v, then at %v", times[i-1], times[i])
		require.False(t, ids[i-1].Time().After(ids[i].Time()), "the time of the ID stamped at %v, then at %v", times[i-1], times[i])
	}
}

// TestParseIDLongInput checks that the error of ParseID, and of
// UnmarshalText with it, quotes only the start of a long input: it
// quoted all of it, four bytes for each byte that is not text, so that a
// hostile megabyte in an ID field of a JSON document became an error of
// four.
func TestParseIDLongInput(t *testing.T) {
	in := strings.Repeat("\xff", 1<<20)
	_, err := eventbus.ParseID(in)
	if !errors.Is(err, eventbus.ErrInvalid) || len(err.Error()) > 200 {
		t.Errorf("ParseID of %d bytes = an error of %d bytes (%.100v), want ErrInvalid in at most 200", len(in), len(err.Error()), err)
	}
}

// TestParseIDIgnoresCase checks that ParseID reads an ID written in lower
// or mixed case as the one String writes, as its doc says: FuzzParseID
// passes over a string that does not parse, so its lower-case seed proved
// nothing.
func TestParseIDIgnoresCase(t *testing.T) {
	id := eventbus.NewID()
	s := id.String()
	mixed := []byte(strings.ToLower(s))
	for i := 0; i < len(mixed); i += 2 {
		mixed[i] = strings.ToUpper(string(mixed[i]))[0]
	}
	for _, in := range []string{strings.ToLower(s), string(mixed), "01arz3ndektsv4rrffq69g5fav"} {
		got, err := eventbus.ParseID(in)
		if err != nil {
			t.Errorf("ParseID(%q) = %v, want %v", in, err, strings.ToUpper(in))
			continue
		}
		if got.String() != strings.ToUpper(in) {
			t.Errorf("ParseID(%q) = %v, want %v", in, got, strings.ToUpper(in))
		}
	}
}

// TestParseIDBounds checks the ends of the ULID range: the largest ID,
// all ones, is "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" and parses back, and a first
// character past '7', which would need a 129th bit, is refused with
// ErrInvalid.
func TestParseIDBounds(t *testing.T) {
	var largest eventbus.ID
	for i := range largest {
		largest[i] = 0xff
	}
	const s = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
	if got := largest.String(); got != s {
		t.Fatalf("String() of the largest ID = %q, want %q", got, s)
	}
	got, err := eventbus.ParseID(s)
	if err != nil || got != largest {
		t.Errorf("ParseID(%q) = %v, %v; want %v", s, got, err, largest)
	}
	for _, in := range []string{"80000000000000000000000000", "Z0000000000000000000000000"} {
		if _, err := eventbus.ParseID(in); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("ParseID(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

// TestIDTime checks that ID.Time gives back the exact millisecond that an
// ID holds: of the ULID spec's example "01ARZ3NDEKTSV4RRFFQ69G5FAV",
// 2016-07-30 23:54:10.259 UTC, and of the IDs of events stamped by an
// Options.Clock, to the millisecond, at times whose first byte of
// milliseconds is not zero (2^40 ms, November 2004, and after) as well as at the ends
// of the 48 bits: 1970 for a time before it, and the year 10889 for a
// time after it, as ID's doc says. A time in a synctest bubble, in 2000,
// has a zero first byte and proves nothing of it.
func TestIDTime(t *testing.T) {
	spec, err := eventbus.ParseID("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	require.NoError(t, err)
	if got, want := spec.Time(), time.Date(2016, 7, 30, 23, 54, 10, 259e6, time.UTC); !got.Equal(want) {
		t.Errorf("ParseID(%q).Time() = %v, want %v", spec, got.UTC(), want)
	}

	last := time.UnixMilli(1<<48 - 1)
	for _, tt := range []struct{ stamped, want time.Time }{
		{time.Date(2026, 11, 28, 9, 26, 26, 123456789, time.UTC), time.Date(2026, 11, 28, 9, 26, 26, 123e6, time.UTC)},
		{time.UnixMilli(1<<40 + 1), time.UnixMilli(1<<40 + 1)},
		{time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), time.UnixMilli(0)},
		{last.Add(time.Hour), last},
	} {
		b := newBus(t, &eventbus.Options{Mode: eventbus.Sync, Clock: func() time.Time { return tt.stamped }})
		topic := newTopic[Order](t, b, "orders", nil)
		var id eventbus.ID
		subscribe(t, topic, "s", func(_ context.Context, e eventbus.Event[Order]) error {
			id = e.ID
			return nil
		}, nil)
		require.NoError(t, topic.Publish(context.Background(), Order{}))
		if got := id.Time(); !got.Equal(tt.want) {
			t.Errorf("Time() of the ID of an event stamped at %v = %v, want %v", tt.stamped, got.UTC(), tt.want.UTC())
		}
	}
}

// TestParseIDNamesTheCharacter checks that ParseID's error names a bad
// character as typed ('é'), not its first byte read alone ('Ã'), or the
// byte where the text is not UTF-8, and does not count the bytes of one
// that is not ASCII as characters.
func TestParseIDNamesTheCharacter(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"é" + strings.Repeat("0", 24), `'é' at 0`},
		{strings.Repeat("0", 25) + "\xff", `'\xff' at 25`},
	} {
		_, err := eventbus.ParseID(tc.in)
		if !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseID(%q) = %v, want an ErrInvalid naming %s", tc.in, err, tc.want)
		}
	}
	_, err := eventbus.ParseID(strings.Repeat("é", 26))
	if !errors.Is(err, eventbus.ErrInvalid) || strings.Contains(err.Error(), "got 52") {
		t.Errorf("ParseID(26 × 'é') = %v, want a count of 26 characters, not 52", err)
	}
}
