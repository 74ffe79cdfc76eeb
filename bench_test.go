package eventbus_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
)

// The benchmarks measure publish-to-handled time per event (per delivery
// for fan-out): b.N events are published, then the benchmark waits until all
// are handled. Each runs beside a naive baseline in the same run: one
// buffered channel and one goroutine per subscriber (per worker when keyed),
// handing over the same Event struct.

type payload struct {
	Key string
	N   int
}

var benchKeys = func() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	return keys
}()

func noop(context.Context, eventbus.Event[payload]) error { return nil }

// must fails the benchmark on err. It calls no b.Helper: that costs a
// stack walk, and must runs once per event.
func must(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// benchTopic returns a bus made with opts, closed when the benchmark ends,
// and its topic "bench", keyed by payload.Key.
func benchTopic(b *testing.B, opts eventbus.Options) (*eventbus.Bus, *eventbus.Topic[payload]) {
	bus, err := eventbus.New(&opts)
	must(b, err)
	b.Cleanup(func() { _ = bus.Close() })
	topic, err := eventbus.NewTopic(bus, "bench", &eventbus.TopicOptions[payload]{Key: func(p payload) string { return p.Key }})
	must(b, err)
	return bus, topic
}

// publishAll publishes b.N events over 1,024 keys, then waits until all are
// handled.
func publishAll(b *testing.B, bus *eventbus.Bus, topic *eventbus.Topic[payload]) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		must(b, topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}))
		i++
	}
	must(b, bus.Flush(ctx))
	b.StopTimer()
}

// benchBus publishes to subs subscriptions of workers workers each.
func benchBus(b *testing.B, subs, workers int, opts eventbus.Options) {
	opts.Workers = workers
	bus, topic := benchTopic(b, opts)
	for i := range subs {
		_, err := topic.Subscribe(fmt.Sprint("s", i), noop, nil)
		must(b, err)
	}
	publishAll(b, bus, topic)
	if subs > 1 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
	}
}

// channels is the baseline: consumers goroutines with a buffered channel
// each, handing over an Event.
type channels struct {
	chans []chan eventbus.Event[payload]
	seed  maphash.Seed
	wg    sync.WaitGroup
}

func newChannels(consumers int, handle func(eventbus.Event[payload])) *channels {
	c := &channels{chans: make([]chan eventbus.Event[payload], consumers), seed: maphash.MakeSeed()}
	for i := range c.chans {
		ch := make(chan eventbus.Event[payload], 1024)
		c.chans[i] = ch
		c.wg.Go(func() {
			for e := range ch {
				handle(e)
			}
		})
	}
	return c
}

// send hands e to every consumer, or, keyed, to the one its key hashes to.
func (c *channels) send(e eventbus.Event[payload], keyed bool) {
	if keyed {
		c.chans[maphash.String(c.seed, e.Payload.Key)%uint64(len(c.chans))] <- e
		return
	}
	for _, ch := range c.chans {
		ch <- e
	}
}

func (c *channels) close() {
	for _, ch := range c.chans {
		close(ch)
	}
	c.wg.Wait()
}

func benchChannels(b *testing.B, consumers int, keyed bool) {
	c := newChannels(consumers, func(e eventbus.Event[payload]) { _ = noop(context.Background(), e) })
	b.ReportAllocs()
	b.ResetTimer()
	n := uint64(len(c.chans))
	i := 0
	for b.Loop() {
		// The send is written out, not a call of c.send, to keep the
		// baseline as tight as a hand-written one.
		e := eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}
		if keyed {
			c.chans[maphash.String(c.seed, e.Payload.Key)%n] <- e
		} else {
			for _, ch := range c.chans {
				ch <- e
			}
		}
		i++
	}
	c.close()
	b.StopTimer()
	if !keyed && consumers > 1 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*consumers), "ns/delivery")
	}
}

func BenchmarkAsync(b *testing.B) {
	b.Run("sub=1/bus", func(b *testing.B) { benchBus(b, 1, 1, eventbus.Options{}) })
	b.Run("sub=1/channel", func(b *testing.B) { benchChannels(b, 1, false) })
	b.Run("sub=10/bus", func(b *testing.B) { benchBus(b, 10, 1, eventbus.Options{}) })
	b.Run("sub=10/channel", func(b *testing.B) { benchChannels(b, 10, false) })
	b.Run("keyed-workers=4/bus", func(b *testing.B) { benchBus(b, 1, 4, eventbus.Options{}) })
	b.Run("keyed-workers=4/channel", func(b *testing.B) { benchChannels(b, 4, true) })
}

// BenchmarkPublishBatch publishes batches of 64 events into one keyed
// subscription of 4 workers, against the channel baseline sending one event
// at a time and against channels that carry a batch's events for a worker
// in one slice.
func BenchmarkPublishBatch(b *testing.B) {
	const size = 64
	b.Run("keyed-workers=4/bus", func(b *testing.B) {
		bus, topic := benchTopic(b, eventbus.Options{Workers: 4})
		_, err := topic.Subscribe("s", noop, nil)
		must(b, err)
		ctx := context.Background()
		batch := make([]payload, size)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			batch[i%size] = payload{Key: benchKeys[i&1023], N: i}
			if i%size == size-1 {
				_, err := topic.PublishBatch(ctx, batch)
				must(b, err)
			}
		}
		_, err = topic.PublishBatch(ctx, batch[:b.N%size])
		must(b, err)
		must(b, bus.Flush(ctx))
	})
	b.Run("keyed-workers=4/channel", func(b *testing.B) { benchChannels(b, 4, true) })
	b.Run("keyed-workers=4/channel-batched", func(b *testing.B) {
		c := newBatchChannels(4)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			c.add(eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}})
			if i%size == size-1 {
				c.send()
			}
		}
		c.send()
		c.close()
	})
}

// batchChannels is the batched baseline: a buffered channel of slices per
// worker, each slice the events of one batch for that worker, from a pool.
type batchChannels struct {
	chans   []chan *[]eventbus.Event[payload]
	pending []*[]eventbus.Event[payload]
	pool    sync.Pool
	seed    maphash.Seed
	wg      sync.WaitGroup
}

func newBatchChannels(workers int) *batchChannels {
	c := &batchChannels{
		chans:   make([]chan *[]eventbus.Event[payload], workers),
		pending: make([]*[]eventbus.Event[payload], workers),
		seed:    maphash.MakeSeed(),
		pool:    sync.Pool{New: func() any { return new([]eventbus.Event[payload]) }},
	}
	for i := range c.chans {
		ch := make(chan *[]eventbus.Event[payload], 1024)
		c.chans[i] = ch
		c.wg.Go(func() {
			for events := range ch {
				for _, e := range *events {
					_ = noop(context.Background(), e)
				}
				clear(*events)
				*events = (*events)[:0]
				c.pool.Put(events)
			}
		})
	}
	return c
}

func (c *batchChannels) add(e eventbus.Event[payload]) {
	i := maphash.String(c.seed, e.Payload.Key) % uint64(len(c.chans))
	if c.pending[i] == nil {
		c.pending[i] = c.pool.Get().(*[]eventbus.Event[payload])
	}
	*c.pending[i] = append(*c.pending[i], e)
}

func (c *batchChannels) send() {
	for i, events := range c.pending {
		if events != nil {
			c.chans[i] <- events
			c.pending[i] = nil
		}
	}
}

func (c *batchChannels) close() {
	for _, ch := range c.chans {
		close(ch)
	}
	c.wg.Wait()
}

// BenchmarkParallelPublishers publishes from GOMAXPROCS goroutines into one
// keyed subscription of 4 workers.
func BenchmarkParallelPublishers(b *testing.B) {
	run := func(b *testing.B, publish func(i int)) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				publish(i)
			}
		})
	}
	b.Run("bus", func(b *testing.B) {
		bus, topic := benchTopic(b, eventbus.Options{Workers: 4})
		_, err := topic.Subscribe("s", noop, nil)
		must(b, err)
		ctx := context.Background()
		run(b, func(i int) {
			if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
				b.Error(err)
			}
		})
		must(b, bus.Flush(ctx))
	})
	b.Run("channel", func(b *testing.B) {
		c := newChannels(4, func(e eventbus.Event[payload]) { _ = noop(context.Background(), e) })
		run(b, func(i int) { c.send(eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}, true) })
		c.close()
	})
}

// BenchmarkIdleLatency publishes one event and waits until it is handled,
// over and over: the cost of waking an idle worker.
func BenchmarkIdleLatency(b *testing.B) {
	handled := make(chan struct{})
	// idle publishes p to a new subscription of topic, over and over.
	idle := func(b *testing.B, topic *eventbus.Topic[payload], p payload) {
		_, err := topic.Subscribe("s", func(context.Context, eventbus.Event[payload]) error {
			handled <- struct{}{}
			return nil
		}, nil)
		must(b, err)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			must(b, topic.Publish(ctx, p))
			<-handled
		}
	}
	b.Run("bus", func(b *testing.B) {
		_, topic := benchTopic(b, eventbus.Options{Workers: 1})
		idle(b, topic, payload{Key: "k"})
	})
	// Keyless events on the default GOMAXPROCS workers: each goes to the
	// worker that handled the one before, which has nothing to do.
	b.Run("bus-keyless", func(b *testing.B) {
		_, topic := benchTopic(b, eventbus.Options{})
		idle(b, topic, payload{})
	})
	b.Run("channel", func(b *testing.B) {
		c := newChannels(1, func(eventbus.Event[payload]) { handled <- struct{}{} })
		b.ReportAllocs()
		for b.Loop() {
			c.send(eventbus.Event[payload]{Payload: payload{Key: "k"}}, false)
			<-handled
		}
		c.close()
	})
}

// syncBench publishes b.N events to a Sync-mode bus made with opts and one
// no-op subscription.
func syncBench(b *testing.B, opts eventbus.Options) {
	opts.Mode = eventbus.Sync
	bus, topic := benchTopic(b, opts)
	_, err := topic.Subscribe("s", noop, nil)
	must(b, err)
	publishAll(b, bus, topic)
}

// BenchmarkSync measures a Sync-mode publish to one no-op handler, against
// calling the handler directly; and the same publish made with a context
// of its own, as a server's request handler would make it.
func BenchmarkSync(b *testing.B) {
	b.Run("bus", func(b *testing.B) { syncBench(b, eventbus.Options{}) })
	b.Run("bus-request-context", func(b *testing.B) {
		_, topic := benchTopic(b, eventbus.Options{Mode: eventbus.Sync})
		_, err := topic.Subscribe("s", noop, nil)
		must(b, err)
		type requestKey struct{}
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), requestKey{}, "request"))
		defer cancel()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			must(b, topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}))
			i++
		}
	})
	b.Run("direct-call", func(b *testing.B) {
		h := eventbus.Handler[payload](noop)
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			must(b, h(ctx, eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}))
			i++
		}
	})
}

// BenchmarkSyncParallel publishes to a Sync-mode topic with one no-op
// subscription from GOMAXPROCS goroutines, as the request handlers of a
// server would, against calling the handler directly from as many.
func BenchmarkSyncParallel(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		_, topic := benchTopic(b, eventbus.Options{Mode: eventbus.Sync})
		_, err := topic.Subscribe("s", noop, nil)
		must(b, err)
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
					b.Error(err)
				}
			}
		})
	})
	b.Run("direct-call", func(b *testing.B) {
		h := eventbus.Handler[payload](noop)
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if err := h(ctx, eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}); err != nil {
					b.Error(err)
				}
			}
		})
	})
}

// BenchmarkMiddleware measures the cost per event of each built-in, and of
// a typical full chain, in Sync mode (publish and handle in one goroutine,
// the least noisy measure), beside no middleware in the same run.
func BenchmarkMiddleware(b *testing.B) {
	noopLayer := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
		return func(ctx context.Context, env *eventbus.Envelope) error { return next(ctx, env) }
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// The typical full chain: panic recovery (built in), a retry policy,
	// idempotency and metrics; then the same with logging.
	full := eventbus.Options{
		Metrics:    true,
		Retry:      eventbus.RetryPolicy{MaxAttempts: 3},
		Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)},
	}
	logged := full
	logged.Middleware = []eventbus.Middleware{eventbus.Idempotency(nil), eventbus.Logging(quiet)}
	cases := []struct {
		name string
		opts eventbus.Options
	}{
		{"none", eventbus.Options{}},
		{"noop-layer", eventbus.Options{Middleware: []eventbus.Middleware{noopLayer}}},
		{"noop-layer-x2", eventbus.Options{Middleware: []eventbus.Middleware{noopLayer, noopLayer}}},
		{"timeout", eventbus.Options{Middleware: []eventbus.Middleware{eventbus.Timeout(time.Second)}}},
		{"idempotency", eventbus.Options{Middleware: []eventbus.Middleware{eventbus.Idempotency(nil)}}},
		{"logging-info", eventbus.Options{Middleware: []eventbus.Middleware{eventbus.Logging(quiet)}}},
		{"metrics", eventbus.Options{Metrics: true}},
		{"full-chain", full},
		{"full-chain+logging", logged},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { syncBench(b, c.opts) })
	}
	b.Run("none-async", func(b *testing.B) { benchBus(b, 1, 4, eventbus.Options{}) })
	b.Run("noop-layer-async", func(b *testing.B) { benchBus(b, 1, 4, cases[1].opts) })
	b.Run("noop-layer-x2-async", func(b *testing.B) { benchBus(b, 1, 4, cases[2].opts) })
	b.Run("full-chain-async", func(b *testing.B) { benchBus(b, 1, 4, full) })
	b.Run("full-chain+logging-async", func(b *testing.B) { benchBus(b, 1, 4, logged) })
}

// BenchmarkBatch compares a batch handler with one-at-a-time handling when
// each call has a fixed cost, as a database round trip has: here a SHA-256
// of 1 KiB per call.
func BenchmarkBatch(b *testing.B) {
	var roundTrip [1024]byte
	var sink [32]byte
	call := func() { sink = sha256.Sum256(roundTrip[:]) }
	b.Run("one-at-a-time", func(b *testing.B) {
		bus, topic := benchTopic(b, eventbus.Options{Workers: 1})
		_, err := topic.Subscribe("s", func(context.Context, eventbus.Event[payload]) error { call(); return nil }, nil)
		must(b, err)
		publishAll(b, bus, topic)
	})
	b.Run("batch=100", func(b *testing.B) {
		bus, topic := benchTopic(b, eventbus.Options{Workers: 1})
		_, err := topic.SubscribeBatch("s", func(context.Context, []eventbus.Event[payload]) error { call(); return nil }, nil)
		must(b, err)
		publishAll(b, bus, topic)
	})
	_ = sink
}

// BenchmarkIdleSubscriptionMemory reports the heap held by an idle
// subscription of one worker that has handled an event, and checks that
// 1,000 of them leave every goroutine asleep.
func BenchmarkIdleSubscriptionMemory(b *testing.B) {
	const subs = 1000
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		bus, topic := benchTopic(b, eventbus.Options{Workers: 1})
		for i := range subs {
			_, err := topic.Subscribe(fmt.Sprint("s", i), noop, nil)
			must(b, err)
		}
		ctx := context.Background()
		must(b, topic.Publish(ctx, payload{Key: "k"}))
		must(b, bus.Flush(ctx))
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/subs, "heap-B/sub")
		b.ReportMetric(float64(after.StackInuse-before.StackInuse)/subs, "stack-B/sub")
		must(b, bus.Close())
	}
}
