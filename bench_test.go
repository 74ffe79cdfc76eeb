package eventbus_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
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

// benchBus runs b.N publishes of a topic with subs subscriptions of workers
// workers each, then flushes.
func benchBus(b *testing.B, subs, workers int, keyed bool, opts *eventbus.SubscriptionOptions, busOpts *eventbus.Options) {
	if busOpts == nil {
		busOpts = &eventbus.Options{}
	}
	busOpts.Workers = workers
	bus, err := eventbus.New(busOpts)
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	var topicOpts eventbus.TopicOptions[payload]
	if keyed {
		topicOpts.Key = func(p payload) string { return p.Key }
	}
	topic, err := eventbus.NewTopic(bus, "bench", &topicOpts)
	if err != nil {
		b.Fatal(err)
	}
	for i := range subs {
		if _, err := topic.Subscribe(fmt.Sprint("s", i), noop, opts); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := bus.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if subs > 1 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
	}
}

// benchChannels is the baseline: consumers goroutines with a buffered
// channel each; an event goes to every consumer (fan-out) or, keyed, to the
// consumer its key hashes to.
func benchChannels(b *testing.B, consumers int, keyed bool) {
	chans := make([]chan eventbus.Event[payload], consumers)
	var wg sync.WaitGroup
	for i := range chans {
		ch := make(chan eventbus.Event[payload], 1024)
		chans[i] = ch
		wg.Go(func() {
			for e := range ch {
				_ = noop(context.Background(), e)
			}
		})
	}
	seed := maphash.MakeSeed()
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		e := eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}
		if keyed {
			chans[maphash.String(seed, e.Payload.Key)%uint64(consumers)] <- e
		} else {
			for _, ch := range chans {
				ch <- e
			}
		}
		i++
	}
	for _, ch := range chans {
		close(ch)
	}
	wg.Wait()
	b.StopTimer()
	if !keyed && consumers > 1 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*consumers), "ns/delivery")
	}
}

func BenchmarkAsync(b *testing.B) {
	b.Run("sub=1/bus", func(b *testing.B) { benchBus(b, 1, 1, false, nil, nil) })
	b.Run("sub=1/channel", func(b *testing.B) { benchChannels(b, 1, false) })
	b.Run("sub=10/bus", func(b *testing.B) { benchBus(b, 10, 1, false, nil, nil) })
	b.Run("sub=10/channel", func(b *testing.B) { benchChannels(b, 10, false) })
	b.Run("keyed-workers=4/bus", func(b *testing.B) { benchBus(b, 1, 4, true, nil, nil) })
	b.Run("keyed-workers=4/channel", func(b *testing.B) { benchChannels(b, 4, true) })
}

// BenchmarkParallelPublishers publishes from GOMAXPROCS goroutines into one
// keyed subscription of 4 workers.
func BenchmarkParallelPublishers(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		bus, err := eventbus.New(&eventbus.Options{Workers: 4})
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close()
		topic, err := eventbus.NewTopic(bus, "bench", &eventbus.TopicOptions[payload]{Key: func(p payload) string { return p.Key }})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := topic.Subscribe("s", noop, nil); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
		if err := bus.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("channel", func(b *testing.B) {
		chans := make([]chan eventbus.Event[payload], 4)
		var wg sync.WaitGroup
		for i := range chans {
			ch := make(chan eventbus.Event[payload], 1024)
			chans[i] = ch
			wg.Go(func() {
				for e := range ch {
					_ = noop(context.Background(), e)
				}
			})
		}
		seed := maphash.MakeSeed()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				e := eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}
				chans[maphash.String(seed, e.Payload.Key)%4] <- e
				i++
			}
		})
		for _, ch := range chans {
			close(ch)
		}
		wg.Wait()
	})
}

// BenchmarkIdleLatency publishes one event and waits until it is handled,
// over and over: the cost of waking an idle worker.
func BenchmarkIdleLatency(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		bus, err := eventbus.New(&eventbus.Options{Workers: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close()
		topic, err := eventbus.NewTopic[payload](bus, "bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		handled := make(chan struct{})
		if _, err := topic.Subscribe("s", func(context.Context, eventbus.Event[payload]) error {
			handled <- struct{}{}
			return nil
		}, nil); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := topic.Publish(ctx, payload{Key: "k"}); err != nil {
				b.Fatal(err)
			}
			<-handled
		}
	})
	b.Run("channel", func(b *testing.B) {
		ch := make(chan eventbus.Event[payload], 1024)
		handled := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for range ch {
				handled <- struct{}{}
			}
		})
		b.ReportAllocs()
		for b.Loop() {
			ch <- eventbus.Event[payload]{Payload: payload{Key: "k"}}
			<-handled
		}
		close(ch)
		wg.Wait()
	})
}

// BenchmarkSync measures a Sync-mode publish to one no-op handler, against
// calling the handler directly.
func BenchmarkSync(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		bus, err := eventbus.New(&eventbus.Options{Mode: eventbus.Sync})
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close()
		topic, err := eventbus.NewTopic(bus, "bench", &eventbus.TopicOptions[payload]{Key: func(p payload) string { return p.Key }})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := topic.Subscribe("s", noop, nil); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("direct-call", func(b *testing.B) {
		h := eventbus.Handler[payload](noop)
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := h(ctx, eventbus.Event[payload]{Payload: payload{Key: benchKeys[i&1023], N: i}}); err != nil {
				b.Fatal(err)
			}
			i++
		}
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
		{"full-chain", eventbus.Options{
			Metrics:    true,
			Retry:      eventbus.RetryPolicy{MaxAttempts: 3},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(nil), eventbus.Logging(quiet)},
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			opts := c.opts
			opts.Mode = eventbus.Sync
			bus, err := eventbus.New(&opts)
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			topic, err := eventbus.NewTopic(bus, "bench", &eventbus.TopicOptions[payload]{Key: func(p payload) string { return p.Key }})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := topic.Subscribe("s", noop, nil); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
	b.Run("full-chain-async", func(b *testing.B) {
		benchBus(b, 1, 4, true, nil, &eventbus.Options{
			Metrics:    true,
			Retry:      eventbus.RetryPolicy{MaxAttempts: 3},
			Middleware: []eventbus.Middleware{eventbus.Idempotency(nil), eventbus.Logging(quiet)},
		})
	})
}

// BenchmarkBatch compares a batch handler with one-at-a-time handling when
// each call has a fixed cost, as a database round trip has: here a SHA-256
// of 1 KiB per call.
func BenchmarkBatch(b *testing.B) {
	var roundTrip [1024]byte
	var sink [32]byte
	call := func() { sink = sha256.Sum256(roundTrip[:]) }
	b.Run("one-at-a-time", func(b *testing.B) {
		benchHandler(b, func(topic *eventbus.Topic[payload]) error {
			_, err := topic.Subscribe("s", func(context.Context, eventbus.Event[payload]) error { call(); return nil }, nil)
			return err
		})
	})
	b.Run("batch=100", func(b *testing.B) {
		benchHandler(b, func(topic *eventbus.Topic[payload]) error {
			_, err := topic.SubscribeBatch("s", func(context.Context, []eventbus.Event[payload]) error { call(); return nil }, nil)
			return err
		})
	})
	_ = sink
}

// benchHandler publishes b.N keyed events to a topic of one worker whose
// subscription subscribe makes, then flushes.
func benchHandler(b *testing.B, subscribe func(*eventbus.Topic[payload]) error) {
	bus, err := eventbus.New(&eventbus.Options{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close()
	topic, err := eventbus.NewTopic(bus, "bench", &eventbus.TopicOptions[payload]{Key: func(p payload) string { return p.Key }})
	if err != nil {
		b.Fatal(err)
	}
	if err := subscribe(topic); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := topic.Publish(ctx, payload{Key: benchKeys[i&1023], N: i}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := bus.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}
