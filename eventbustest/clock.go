package eventbustest

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-a6f1faae/eventbus"
)

// epoch is where a Clock starts: midnight UTC on 2000-01-01, where the fake
// clock of a testing/synctest bubble starts too.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Clock is a clock that moves only when told, for eventbus.Options.Clock
// (pass its Now method), so that event times in a test's output are the
// same on every run. The zero value reads 2000-01-01 00:00:00 UTC, the time
// a testing/synctest bubble starts at. It is safe for concurrent use.
//
// The bus's Clock stamps the events of its topics and the dead-letter
// queue's failure times, and measures the latency metrics from those
// stamps; retries and handling times follow the time package, which is
// fake inside a synctest bubble, and so do the times of events read from
// a store (a StoreTopic's, a durable subscription's), which the store
// stamps when it commits them.
type Clock struct {
	mu      sync.Mutex
	elapsed time.Duration
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return epoch.Add(c.elapsed)
}

// Advance moves the clock forward by d, or back for a negative d, as a
// wall clock set back would go (the bus's own clock never goes back).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.elapsed += d
}

// Sequence returns a source of event IDs for eventbus.Options.NewID that
// numbers events 1, 2, 3, ... in the order they are published: ID n is n in
// the last bytes and zero elsewhere (a zero timestamp), so that its string
// is "00000000000000000000000001" for n = 1 on every run. It is safe for
// concurrent use; IDs are stable across runs when the order of publishing
// is. Each Sequence starts at 1: buses that must not reuse each other's IDs
// need one Sequence between them, as [NewBus] gives the buses of a test.
func Sequence() func() eventbus.ID {
	var n atomic.Uint64
	return func() eventbus.ID {
		var id eventbus.ID
		binary.BigEndian.PutUint64(id[8:], n.Add(1))
		return id
	}
}
