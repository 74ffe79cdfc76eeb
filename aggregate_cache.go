package eventbus

import (
	"container/list"
	"sync"
)

// aggregateCache keeps the latest loaded state of up to size streams, the
// least recently used evicted first. An entry is as of a revision: a load
// reads the events after it, so appends made elsewhere are never missed,
// and one made through the Aggregate replaces it. It is safe for concurrent
// use.
type aggregateCache[T any] struct {
	mu           sync.Mutex
	size         int
	entries      map[string]*list.Element // of *cacheEntry[T]
	lru          list.List                // most recently used first
	hits, misses uint64
}

type cacheEntry[T any] struct {
	stream string
	v      Version[T]
}

func newAggregateCache[T any](size int) *aggregateCache[T] {
	return &aggregateCache[T]{size: size, entries: make(map[string]*list.Element)}
}

func (c *aggregateCache[T]) get(stream string) (Version[T], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[stream]
	if el == nil {
		return Version[T]{}, false
	}
	c.lru.MoveToFront(el)
	return el.Value.(*cacheEntry[T]).v, true
}

// put stores v as stream's state unless the cache holds a later one.
func (c *aggregateCache[T]) put(stream string, v Version[T]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[stream]; el != nil {
		e := el.Value.(*cacheEntry[T])
		if v.Expected != NoStream && (e.v.Expected == NoStream || v.Expected.rev >= e.v.Expected.rev) {
			e.v = v
		}
		c.lru.MoveToFront(el)
		return
	}
	c.entries[stream] = c.lru.PushFront(&cacheEntry[T]{stream: stream, v: v})
	if c.lru.Len() > c.size {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry[T]).stream)
	}
}

// drop forgets stream's state.
func (c *aggregateCache[T]) drop(stream string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[stream]; el != nil {
		c.lru.Remove(el)
		delete(c.entries, stream)
	}
}

// count counts a load as a hit or a miss.
func (c *aggregateCache[T]) count(hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hit {
		c.hits++
	} else {
		c.misses++
	}
}

func (c *aggregateCache[T]) stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
