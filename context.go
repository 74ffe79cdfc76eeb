package eventbus

import (
	"context"
	"sync/atomic"
)

// parentKey is the context key under which a handler's context holds the
// event being handled, so that events published by the handler inherit its
// correlation ID and take its ID as causation ID.
type parentKey struct{}

// delivery is one event on its way to one subscription, and the context its
// handler runs with. Deliveries live in slices that are never reused, so a
// handler may keep its context (in a goroutine, say) and still publish with
// the right causation after it returns, at no allocation per event.
type delivery[T any] struct {
	context.Context // the subscription's context, set before the first attempt
	Event[T]
	attempts int
}

// Value returns the event's header for parentKey and defers to the
// subscription's context for every other key.
func (d *delivery[T]) Value(key any) any {
	if key == (parentKey{}) {
		return &d.Header
	}
	return d.Context.Value(key)
}

// parent returns the header of the event whose handler runs with ctx, or nil.
func parent(ctx context.Context) *Header {
	h, _ := ctx.Value(parentKey{}).(*Header)
	return h
}

// slab hands out deliveries for synchronous publishing, where each handler
// context must outlive the call that made it. Deliveries come from chunks of
// slabSize, one allocation per chunk.
type slab[T any] struct {
	cur atomic.Pointer[slabChunk[T]]
}

const slabSize = 64

type slabChunk[T any] struct {
	items [slabSize]delivery[T]
	next  atomic.Int32
}

func (s *slab[T]) get() *delivery[T] {
	for {
		c := s.cur.Load()
		if c != nil {
			if i := c.next.Add(1) - 1; i < slabSize {
				return &c.items[i]
			}
		}
		fresh := new(slabChunk[T])
		fresh.next.Store(1)
		if s.cur.CompareAndSwap(c, fresh) {
			return &fresh.items[0]
		}
	}
}
