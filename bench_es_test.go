package eventbus_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

// benchBackends returns, per store backend, a function that opens a new
// store holding what fill appends. The file store is filled once and
// copied for each open, so that filling it is not what a benchmark that
// opens a store per iteration spends its time on.
func benchBackends(b *testing.B, fill func(s eventbus.Store)) []struct {
	name string
	open func() eventbus.Store
} {
	template := b.TempDir()
	s := openBench(b, template, nil)
	fill(s)
	must(b, s.Close())
	return []struct {
		name string
		open func() eventbus.Store
	}{
		{"memory", func() eventbus.Store {
			s := newBenchStore(b)
			fill(s)
			return s
		}},
		{"file", func() eventbus.Store {
			dir := b.TempDir()
			must(b, os.CopyFS(dir, os.DirFS(template)))
			return openBench(b, dir, nil)
		}},
	}
}

// BenchmarkAggregateLoad loads an account of 10,000 events by replaying
// all of them, and from a snapshot 10 events before the end.
func BenchmarkAggregateLoad(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	reg := newBankRegistry(b)
	for _, be := range benchBackends(b, func(s eventbus.Store) {
		for range n / 100 {
			batch := make([]eventbus.EventData, 100)
			for i := range batch {
				var err error
				batch[i], err = reg.Encode(Deposited{Amount: 1})
				must(b, err)
			}
			_, err := s.Append(ctx, "account-1", eventbus.Any, batch...)
			must(b, err)
		}
	}) {
		for _, snapshot := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/snapshot=%v", be.name, snapshot), func(b *testing.B) {
				s := be.open()
				var opts *eventbus.AggregateOptions
				if snapshot {
					opts = &eventbus.AggregateOptions{SnapshotEvery: 1000}
					must(b, eventbus.SaveSnapshot(ctx, s, reg, "account-1", eventbus.Snapshot[Account]{Revision: n - 11, State: Account{Balance: n - 10, Events: n - 10}}))
				}
				accounts := newAccounts(b, s, reg, opts)
				b.ReportAllocs()
				for b.Loop() {
					v, err := accounts.Load(ctx, "account-1")
					must(b, err)
					if v.State.Balance != n {
						b.Fatalf("balance %d, want %d", v.State.Balance, n)
					}
				}
			})
		}
	}
}

// BenchmarkDurable runs a new durable subscription over 10,000 stored
// events in 100 streams, saving its checkpoint every N events, until it has
// handled them all; the baseline reads them with Store.Subscribe alone.
func BenchmarkDurable(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	for _, be := range benchBackends(b, func(s eventbus.Store) { fillStore(b, s, n) }) {
		b.Run(be.name+"/baseline=store.Subscribe", func(b *testing.B) {
			s := be.open()
			b.ReportAllocs()
			for b.Loop() {
				count := 0
				for _, err := range s.Subscribe(ctx, nil) {
					must(b, err)
					if count++; count == n {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
		for _, every := range []int{1, 100, 1000, -100} {
			name := fmt.Sprintf("%s/checkpoint-every=%d", be.name, every)
			if every < 0 { // a batch handler, beside the checkpoint-every=100 one
				every = -every
				name = fmt.Sprintf("%s/batch=100,checkpoint-every=%d", be.name, every)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer() // a new store and bus each time: checkpoints pile up
					s := be.open()
					bus, err := eventbus.New(nil)
					must(b, err)
					b.StartTimer()
					opts := &eventbus.DurableOptions{CheckpointEvery: every}
					var d *eventbus.Durable
					if strings.Contains(name, "batch") {
						d, err = eventbus.SubscribeDurableBatch(ctx, bus, s, nil, "bench",
							func(context.Context, []eventbus.Event[eventbus.RecordedEvent]) error { return nil }, opts)
					} else {
						d, err = eventbus.SubscribeDurable(ctx, bus, s, nil, "bench",
							func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, opts)
					}
					must(b, err)
					must(b, d.WaitFor(ctx, n-1))
					must(b, d.Stop(ctx))
					b.StopTimer()
					must(b, bus.Close())
					must(b, s.Close())
					b.StartTimer()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			})
		}
	}
}

// BenchmarkStoreTopicPublish appends batches of 64 events over 8 keys
// through a StoreTopic, with PublishBatch (one atomic append, one sync on
// a FileStore) beside the baseline: a Publish per event.
func BenchmarkStoreTopicPublish(b *testing.B) {
	const n = 64
	batch := make([]Order, n)
	for i := range batch {
		batch[i] = Order{Key: benchKeys[i%8], N: i}
	}
	for _, be := range []struct {
		name string
		open func(b *testing.B) eventbus.Store
	}{
		{"memory", func(b *testing.B) eventbus.Store { return newBenchStore(b) }},
		{"file-SyncAlways", func(b *testing.B) eventbus.Store { return openBench(b, b.TempDir(), nil) }},
	} {
		for _, batched := range []bool{false, true} {
			name := be.name + "/baseline=publish-each"
			if batched {
				name = fmt.Sprintf("%s/batch=%d", be.name, n)
			}
			b.Run(name, func(b *testing.B) {
				reg, err := eventbus.NewRegistry(nil)
				must(b, err)
				must(b, eventbus.Register[Order](reg, nil))
				bus, err := eventbus.New(nil)
				must(b, err)
				b.Cleanup(func() { _ = bus.Close() })
				topic, err := eventbus.NewStoreTopic[Order](bus, be.open(b), reg, "orders")
				must(b, err)
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					if batched {
						_, err := topic.PublishBatch(ctx, batch)
						must(b, err)
						continue
					}
					for _, o := range batch {
						_, err := topic.Publish(ctx, o)
						must(b, err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
			})
		}
	}
}
