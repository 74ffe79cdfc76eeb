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

// contextSlab hands out eventContexts from chunks of slabSize, one
// allocation per chunk. It is safe for concurrent use.
type contextSlab struct {
	cur atomic.Pointer[slabChunk]
}

const slabSize = 128

type slabChunk struct {
	items [slabSize]eventContext
	next  atomic.Int32
}

// get returns a fresh context for the event h, under base.
func (s *contextSlab) get(base context.Context, h *Header) *eventContext {
	c := s.next()
	c.Context = base
	c.parent = lineage{ID: h.ID, CorrelationID: h.CorrelationID, Metadata: h.Metadata}
	return c
}

func (s *contextSlab) next() *eventContext {
	for {
		c := s.cur.Load()
		if c != nil {
			if i := c.next.Add(1) - 1; i < slabSize {
				return &c.items[i]
			}
		}
		fresh := new(slabChunk)
		fresh.next.Store(1)
		if s.cur.CompareAndSwap(c, fresh) {
			return &fresh.items[0]
		}
	}
}
