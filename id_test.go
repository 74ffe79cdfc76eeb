package eventbus_test

import (
	"context"
	"strings"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
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
