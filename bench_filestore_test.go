package eventbus_test

import (
	"flag"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/seed-a6f1faae/eventbus"
)

func openBench(b *testing.B, dir string, opts *eventbus.FileStoreOptions) *eventbus.FileStore {
	b.Helper()
	s, err := eventbus.OpenFileStore(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkFileStoreAppend appends one event per operation: from one
// goroutine and from 8 at once, whose appends share writes and fsyncs
// (group commit) under SyncAlways.
func BenchmarkFileStoreAppend(b *testing.B) {
	for _, tt := range []struct {
		name      string
		sync      eventbus.SyncPolicy
		appenders int
	}{
		{"SyncAlways/1", eventbus.SyncAlways, 1},
		{"SyncAlways/8", eventbus.SyncAlways, 8},
		{"SyncNever/1", eventbus.SyncNever, 1},
		{"SyncNever/8", eventbus.SyncNever, 8},
	} {
		b.Run(tt.name, func(b *testing.B) {
			s := openBench(b, b.TempDir(), &eventbus.FileStoreOptions{Sync: tt.sync})
			ev := benchEvents(1)[0]
			b.ReportAllocs()
			if tt.appenders == 1 {
				for b.Loop() {
					ev.ID = eventbus.NewID()
					if _, err := s.Append(b.Context(), "s", eventbus.Any, ev); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				// Exactly tt.appenders goroutines (RunParallel would start a
				// multiple of GOMAXPROCS), sharing b.N appends.
				var next atomic.Int64
				var wg sync.WaitGroup
				for range tt.appenders {
					wg.Go(func() {
						ev := ev
						for next.Add(1) <= int64(b.N) {
							ev.ID = eventbus.NewID()
							if _, err := s.Append(b.Context(), "s", eventbus.Any, ev); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

func BenchmarkFileStoreReadStream(b *testing.B) {
	s := openBench(b, b.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
	fillStore(b, s, 20000) // 100 streams of 200 events
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, err := range s.ReadStream(b.Context(), "s-7", nil) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkFileStoreReadAll(b *testing.B) {
	s := openBench(b, b.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
	fillStore(b, s, 50000)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, err := range s.ReadAll(b.Context(), nil) {
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFileStoreOpen1M opens a store of 1 million events. Building the
// store takes a while, so it runs only when -bench names it.
func BenchmarkFileStoreOpen1M(b *testing.B) {
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), "Open1M") {
		b.Skip("run with -bench Open1M")
	}
	dir := b.TempDir()
	s := openBench(b, dir, &eventbus.FileStoreOptions{Sync: eventbus.SyncNever})
	fillStore(b, s, 1_000_000)
	s.Close()
	b.ReportAllocs()
	for b.Loop() {
		s, err := eventbus.OpenFileStore(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		if got := s.Stats().NextPosition; got != 1_000_000 {
			b.Fatalf("opened %d events, want 1,000,000", got)
		}
		s.Close()
	}
}
