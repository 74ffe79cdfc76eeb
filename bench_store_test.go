package eventbus_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

func newBenchStore(b *testing.B) *eventbus.MemoryStore {
	s, err := eventbus.NewMemoryStore(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchEvents(n int) []eventbus.EventData {
	evs := make([]eventbus.EventData, n)
	for i := range evs {
		evs[i] = eventbus.EventData{ID: eventbus.NewID(), Type: "user.created", Data: []byte(`{"id":"u-1","name":"Ada Lovelace"}`)}
	}
	return evs
}

// fillStore appends n events to s over 100 streams, in batches of 100.
func fillStore(b testing.TB, s eventbus.Store, n int) {
	ctx := context.Background()
	for i := 0; i < n; i += 100 {
		if _, err := s.Append(ctx, fmt.Sprintf("s-%d", i/100%100), eventbus.Any, benchEvents(100)...); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStoreAppend(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			s := newBenchStore(b)
			ctx := context.Background()
			// Distinct IDs, made ahead, so that every append writes.
			batches := make([][]eventbus.EventData, 1<<16/size)
			for i := range batches {
				batches[i] = benchEvents(size)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == len(batches) {
					b.StopTimer()
					s = newBenchStore(b)
					i = 0
					b.StartTimer()
				}
				if _, err := s.Append(ctx, "stream", eventbus.Any, batches[i]...); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func BenchmarkStoreReadStream(b *testing.B) {
	s := newBenchStore(b)
	ctx := context.Background()
	for range 10 {
		if _, err := s.Append(ctx, "stream", eventbus.Any, benchEvents(100)...); err != nil {
			b.Fatal(err)
		}
	}
	fillStore(b, s, 10_000)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for _, err := range s.ReadStream(ctx, "stream", nil) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != 1000 {
			b.Fatalf("read %d events, want 1000", n)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkStoreReadAll(b *testing.B) {
	const n = 100_000
	s := newBenchStore(b)
	fillStore(b, s, n)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		read := 0
		for _, err := range s.ReadAll(ctx, nil) {
			if err != nil {
				b.Fatal(err)
			}
			read++
		}
		if read != n {
			b.Fatalf("read %d events, want %d", read, n)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkStoreSubscribe measures a catch-up subscription that reads
// 100,000 events of history, then 10,000 live ones appended as it runs.
func BenchmarkStoreSubscribe(b *testing.B) {
	const history, live = 100_000, 10_000
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s := newBenchStore(b)
		fillStore(b, s, history)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < live; i += 100 {
				if _, err := s.Append(ctx, "live", eventbus.Any, benchEvents(100)...); err != nil {
					b.Error(err)
					return
				}
			}
		}()
		b.StartTimer()
		read := 0
		for _, err := range s.Subscribe(ctx, nil) {
			if err != nil {
				b.Fatal(err)
			}
			if read++; read == history+live {
				break
			}
		}
		b.StopTimer()
		cancel()
		<-done
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*(history+live))/b.Elapsed().Seconds(), "events/s")
}
