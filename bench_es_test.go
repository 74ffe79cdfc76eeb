package eventbus_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

// BenchmarkAggregateLoad loads an account of 10,000 events by replaying
// all of them, and from a snapshot 10 events before the end.
func BenchmarkAggregateLoad(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	for _, snapshot := range []bool{false, true} {
		b.Run(fmt.Sprintf("snapshot=%v", snapshot), func(b *testing.B) {
			s := newBenchStore(b)
			reg := newBankRegistry(b)
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

// BenchmarkDurable runs a new durable subscription over 10,000 stored
// events in 100 streams, saving its checkpoint every N events, until it has
// handled them all; the baseline reads them with Store.Subscribe alone.
func BenchmarkDurable(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	b.Run("baseline=store.Subscribe", func(b *testing.B) {
		s := newBenchStore(b)
		fillStore(b, s, n)
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
	for _, every := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("checkpoint-every=%d", every), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer() // a new store and bus each time: checkpoints pile up
				s := newBenchStore(b)
				fillStore(b, s, n)
				bus, err := eventbus.New(nil)
				must(b, err)
				b.StartTimer()
				d, err := eventbus.SubscribeDurable(ctx, bus, s, nil, "bench",
					func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil },
					&eventbus.DurableOptions{CheckpointEvery: every})
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
