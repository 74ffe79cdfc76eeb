package eventbus_test

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestKeptContextsNameTheirEvents keeps the context of every attempt at
// every event, in two subscriptions (of two workers in Async mode), in
// both modes, and publishes with each
// once all are handled: each child must name the kept context's event as
// its cause and that event's correlation ID as its own. The events vary in
// every way that shapes a handler context: IDs the workers number one
// after another, a millisecond or more apart, and minutes apart; IDs a
// PublishOption gives; correlation IDs of their own; metadata; first
// attempts that fail, so that later events of their key wait and are
// handled out of turn; and, in the second subscription, IDs numbered by
// the first one's queues.
func TestKeptContextsNameTheirEvents(t *testing.T) {
	eachMode(t, testKeptContextsNameTheirEvents)
}

func testKeptContextsNameTheirEvents(t *testing.T, mode eventbus.Mode) {
	synctest.Test(t, func(t *testing.T) {
		b := newBus(t, &eventbus.Options{Mode: mode, Workers: 2, Retry: eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Millisecond}})
		orders := newTopic[Order](t, b, "orders", nil)
		children := newTopic[int](t, b, "children", &eventbus.TopicOptions[int]{Mode: eventbus.Sync})
		type kept struct {
			ctx      context.Context
			id, corr eventbus.ID
			sub      string
			n, tried int
		}
		var mu sync.Mutex
		var keep []kept
		keeper := func(sub string) eventbus.Handler[Order] {
			tries := map[int]int{}
			return func(ctx context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				tries[e.Payload.N]++
				keep = append(keep, kept{ctx, e.ID, e.CorrelationID, sub, e.Payload.N, tries[e.Payload.N]})
				if e.Payload.N%7 == 3 && tries[e.Payload.N] == 1 {
					return errFlaky
				}
				return nil
			}
		}
		subscribe(t, orders, "a", keeper("a"), nil)
		subscribe(t, orders, "b", keeper("b"), nil)

		ctx := context.Background()
		const events = 600
		for n := range events {
			var opts []eventbus.PublishOption
			switch {
			case n%50 == 7:
				opts = append(opts, func(h *eventbus.Header) { h.ID = eventbus.NewID() })
			case n%13 == 5:
				opts = append(opts, eventbus.WithCorrelationID(eventbus.NewID()))
			case n%17 == 9:
				opts = append(opts, eventbus.WithMetadata(eventbus.Metadata{"n": "x"}))
			}
			require.NoError(t, orders.Publish(ctx, Order{Key: string(rune('a' + n%5)), N: n}, opts...))
			switch {
			case n == 200:
				time.Sleep(70 * time.Second) // past what a run's millisecond offsets hold
			case n == 400:
				time.Sleep(3 * time.Minute)
			case n%10 == 0:
				time.Sleep(time.Millisecond)
			}
		}
		require.NoError(t, b.Flush(ctx))

		got := recordHeaders(t, children, "record")
		type link struct{ cause, corr eventbus.ID }
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, keep, 2*(events+events/7+1))
		for i, k := range keep {
			require.NoError(t, k.ctx.Err(), "event %d in %s, attempt %d", k.n, k.sub, k.tried)
			require.NoError(t, children.Publish(k.ctx, i))
			h := got()[i]
			require.Equal(t, link{k.id, k.corr}, link{h.CausationID, h.CorrelationID}, "event %d in %s, attempt %d", k.n, k.sub, k.tried)
		}
		// The contexts end with their subscriptions; a Sync-mode handler's
		// with its publisher's, here context.Background(), which never ends.
		require.NoError(t, b.Close())
		for _, k := range keep {
			if mode == eventbus.Sync {
				require.NoError(t, k.ctx.Err())
				continue
			}
			require.ErrorIs(t, k.ctx.Err(), context.Canceled, "event %d in %s, attempt %d", k.n, k.sub, k.tried)
			select {
			case <-k.ctx.Done():
			default:
				t.Fatalf("event %d in %s, attempt %d: Done is open after Close", k.n, k.sub, k.tried)
			}
		}
	})
}

// TestKeptContextOfAnIDLikeTheBuses gives events IDs that follow the one
// the bus gave the event before them, but for one of the bus's random bits,
// or a millisecond earlier: their handlers' contexts must still name them.
func TestKeptContextOfAnIDLikeTheBuses(t *testing.T) {
	b := newBus(t, &eventbus.Options{Workers: 1})
	orders := newTopic[Order](t, b, "orders", nil)
	children := newTopic[int](t, b, "children", &eventbus.TopicOptions[int]{Mode: eventbus.Sync})
	var mu sync.Mutex
	var ctxs []context.Context
	var ids []eventbus.ID
	subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		ctxs, ids = append(ctxs, ctx), append(ids, e.ID)
		return nil
	}, nil)
	got := recordHeaders(t, children, "record")
	ctx := context.Background()
	// The first half of an ID: 48 bits of milliseconds, then the bus's 16
	// random bits.
	for _, shift := range []func(hi uint64) uint64{
		func(hi uint64) uint64 { return hi ^ 1 },         // a random bit
		func(hi uint64) uint64 { return hi ^ 1<<15 },     // another
		func(hi uint64) uint64 { return hi - 1<<16 },     // a millisecond earlier
		func(hi uint64) uint64 { return hi - 1000<<16 },  // a second earlier
		func(hi uint64) uint64 { return hi + 70000<<16 }, // 70 s on: past what a run holds
	} {
		for range 2 { // the second follows the first: a run takes it
			require.NoError(t, orders.Publish(ctx, Order{Key: "k"}))
		}
		require.NoError(t, b.Flush(ctx))
		mu.Lock()
		last := ids[len(ids)-1]
		mu.Unlock()
		var next eventbus.ID
		binary.BigEndian.PutUint64(next[:8], shift(binary.BigEndian.Uint64(last[:8])))
		binary.BigEndian.PutUint64(next[8:], binary.BigEndian.Uint64(last[8:])+1) // the count of the bus's next event
		require.NoError(t, orders.Publish(ctx, Order{Key: "k"}, func(h *eventbus.Header) { h.ID = next }))
		require.NoError(t, b.Flush(ctx))
	}
	require.Len(t, ctxs, 15)
	for i, c := range ctxs {
		require.NoError(t, children.Publish(c, i))
		require.Equal(t, ids[i], got()[i].CausationID, "event %d", i)
	}
}

// TestSyncContextsExtendTheirPublishers publishes to a Sync-mode topic
// from parallel goroutines, each event with a context of its own, or
// every third with context.Background(), and keeps its handler's context:
// each must carry its publisher's values, end when its publisher's
// context does and not before, and name its event as cause.
func TestSyncContextsExtendTheirPublishers(t *testing.T) {
	const publishers, each = 4, 300 // many chunks, shared by the goroutines
	b := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	orders := newTopic[Order](t, b, "orders", nil)
	children := newTopic[int](t, b, "children", nil)
	type requestKey struct{}
	type kept struct {
		ctx    context.Context
		id     eventbus.ID
		cancel context.CancelFunc
	}
	var mu sync.Mutex
	keep := map[int]kept{}
	subscribe(t, orders, "s", func(ctx context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		k := keep[e.Payload.N]
		k.ctx, k.id = ctx, e.ID
		keep[e.Payload.N] = k
		return nil
	}, nil)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				n := p*each + i
				ctx, cancel := context.WithCancel(context.WithValue(context.Background(), requestKey{}, n))
				if n%3 == 0 {
					cancel()
					ctx, cancel = context.Background(), func() {}
				}
				mu.Lock()
				keep[n] = kept{cancel: cancel}
				mu.Unlock()
				if err := orders.Publish(ctx, Order{N: n}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	require.Len(t, keep, publishers*each)
	for n, k := range keep {
		if n%3 == 0 {
			require.Nil(t, k.ctx.Value(requestKey{}), "event %d", n)
		} else {
			require.Equal(t, n, k.ctx.Value(requestKey{}), "event %d", n)
		}
		require.NoError(t, k.ctx.Err(), "event %d", n)
		if n%2 == 0 {
			k.cancel()
		}
	}
	got := recordHeaders(t, children, "record")
	for n := range publishers * each {
		k := keep[n]
		if n%2 == 0 && n%3 != 0 {
			require.ErrorIs(t, k.ctx.Err(), context.Canceled, "event %d", n)
			continue
		}
		require.NoError(t, k.ctx.Err(), "event %d", n)
		require.NoError(t, children.Publish(k.ctx, n))
		headers := got()
		require.Equal(t, k.id, headers[len(headers)-1].CausationID, "event %d", n)
		k.cancel()
	}
}
