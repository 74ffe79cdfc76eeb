package eventbus

import (
	"context"
	"sync/atomic"
)

// parentKey is the context key under which a handler's context holds the
// event being handled, so that events published by the handler inherit its
// correlation ID and take its ID as causation ID.
type parentKey struct{}

// eventContext is the context a handler runs with: the subscription's
// context (or the publisher's, in Sync mode) plus what the events the handler
// publishes inherit. Each event gets its own, so a handler may keep its
// context (in a goroutine, say) and still publish with the right causation
// after it returns; they come from slabs, so that costs no allocation per
// event.
type eventContext struct {
	context.Context
	parent lineage
}

// lineage is what an event passes on to the events its handler publishes.
type lineage struct {
	ID, CorrelationID ID
	Metadata          Metadata
	handler           bool // the context is a handler's: Publish never waits
}

// Value returns the event's lineage for parentKey and defers to the
// enclosing context for every other key.
func (c *eventContext) Value(key any) any {
	if key == (parentKey{}) {
		return &c.parent
	}
	return c.Context.Value(key)
}

// parent returns the lineage of the event whose handler runs with ctx, or
// nil.
func parent(ctx context.Context) *lineage {
	l, _ := ctx.Value(parentKey{}).(*lineage)
	return l
}

// contextSlab hands out a worker's eventContexts from chunks of slabSize,
// one allocation per chunk. It is not safe for concurrent use.
type contextSlab struct {
	chunk []eventContext
}

const slabSize = 64

// get returns a fresh context for the event h, under base.
func (s *contextSlab) get(base context.Context, h *Header) *eventContext {
	if len(s.chunk) == 0 {
		s.chunk = make([]eventContext, slabSize)
	}
	c := &s.chunk[0]
	s.chunk = s.chunk[1:]
	c.init(base, h)
	return c
}

func (c *eventContext) init(base context.Context, h *Header) {
	c.Context = base
	c.parent = lineage{ID: h.ID, CorrelationID: h.CorrelationID, Metadata: h.Metadata, handler: true}
}

// syncSlab hands out the eventContexts of Sync-mode publishes, which run
// concurrently, and numbers their events for IDs: each chunk is an ID source.
type syncSlab struct {
	cur atomic.Pointer[syncChunk]
}

type syncChunk struct {
	items  [slabSize]eventContext
	next   atomic.Int32
	source uint32
}

// get returns a context to initialise, with the ID source and number of
// its event.
func (s *syncSlab) get(ids *idSource) (*eventContext, uint32, uint64) {
	for {
		c := s.cur.Load()
		if c != nil {
			if i := c.next.Add(1) - 1; i < slabSize {
				return &c.items[i], c.source, uint64(i)
			}
		}
		fresh := &syncChunk{source: ids.source()}
		fresh.next.Store(1)
		if s.cur.CompareAndSwap(c, fresh) {
			return &fresh.items[0], fresh.source, 0
		}
	}
}
