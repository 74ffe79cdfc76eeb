package eventbus

import (
	"testing"
	"time"
)

// A publisher held up between its clock read and its install must not
// install a reading older than one already handed out: event times, and the
// IDs made from them, would go back.
func TestClockNeverGoesBack(t *testing.T) {
	c := newClock(nil, make(chan struct{}))
	early := c.start.Add(time.Millisecond) // read first, installed last
	late := c.start.Add(time.Second)

	if got := c.install(late); !got.Equal(late) {
		t.Fatalf("install(late) = %v, want %v", got, late)
	}
	if got := c.install(early); !got.Equal(late) {
		t.Fatalf("install while fresh = %v, want the cached %v", got, late)
	}
	if !c.expire() {
		t.Fatal("expire of a fresh reading reported it stale")
	}
	if c.expire() {
		t.Fatal("second expire reported a fresh reading")
	}
	if got := c.install(early); got.Before(late) {
		t.Fatalf("install(early) after expiry = %v, before %v handed out earlier", got, late)
	}
	if got := c.now(); got.Before(late) {
		t.Fatalf("now() = %v, before %v handed out earlier", got, late)
	}
}
