package eventbus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// savedCheckpoint returns the checkpoint of the durable subscription name
// saved in s, or -1 if none is.
func savedCheckpoint(t *testing.T, s eventbus.Store, name string) int {
	t.Helper()
	for e, err := range s.ReadStream(context.Background(), "$checkpoint-"+name, &eventbus.ReadOptions{Direction: eventbus.Backwards, From: eventbus.End, Limit: 1}) {
		require.NoError(t, err)
		n, err := strconv.Atoi(string(e.Data))
		require.NoError(t, err)
		return n
	}
	return -1
}

func subscribeDurable[E any](t *testing.T, b *eventbus.Bus, s eventbus.Store, r *eventbus.Registry, name string, h eventbus.Handler[E], opts *eventbus.DurableOptions) *eventbus.Durable {
	t.Helper()
	d, err := eventbus.SubscribeDurable(context.Background(), b, s, r, name, h, opts)
	require.NoError(t, err)
	return d
}

// A restart in the middle of a durable subscription: the first bus stops
// while a's third event waits for a retry and every event of b is done. The
// checkpoint stays before a's third event, so the second bus delivers b's
// events again; with the idempotency middleware over the store they are
// not applied again.
func TestDurableRestart(t *testing.T) {
	for _, idempotent := range []bool{false, true} {
		t.Run("idempotent="+strconv.FormatBool(idempotent), func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				ctx := context.Background()
				appendDeposits(t, s, reg, "a", 10) // positions 0-9
				last := appendDeposits(t, s, reg, "b", 10)

				var mu sync.Mutex
				var applied []eventbus.ID
				handler := func(stuck bool) eventbus.Handler[eventbus.RecordedEvent] {
					return func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
						if stuck && e.Key == "a" && e.Payload.Revision == 2 {
							return errors.New("not now") // the process dies before the retry
						}
						mu.Lock()
						applied = append(applied, e.ID)
						mu.Unlock()
						return nil
					}
				}
				opts := func(s eventbus.Store) *eventbus.DurableOptions {
					o := &eventbus.DurableOptions{CheckpointEvery: 3, Subscription: eventbus.SubscriptionOptions{
						Workers: 2,
						Retry:   &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour},
					}}
					if idempotent {
						o.Subscription.Middleware = []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(s)})}
					}
					return o
				}

				bus1 := newBus(t, nil)
				d1 := subscribeDurable(t, bus1, s, nil, "ledger", handler(true), opts(s))
				synctest.Wait()
				if got := d1.Checkpoint(); got != 2 {
					t.Fatalf("Checkpoint() with a's third event waiting = %d, want 2", got)
				}
				var undelivered *eventbus.UndeliveredError
				if err := bus1.Close(); !errors.As(err, &undelivered) {
					t.Fatalf("Close() = %v, want an *UndeliveredError for a's events", err)
				}
				if got := savedCheckpoint(t, s, "ledger"); got != 2 {
					t.Fatalf("saved checkpoint after Close = %d, want 2", got)
				}

				s = reopen()
				bus2 := newBus(t, nil)
				d2 := subscribeDurable(t, bus2, s, nil, "ledger", handler(false), opts(s))
				require.NoError(t, d2.WaitFor(ctx, last.Position))
				require.NoError(t, bus2.Shutdown(ctx))
				if got := savedCheckpoint(t, s, "ledger"); got <= int(last.Position) {
					t.Errorf("saved checkpoint after Shutdown = %d, want past %d", got, last.Position)
				}

				counts := map[eventbus.ID]int{}
				for _, id := range applied { // every handler has returned
					counts[id]++
				}
				twice := 0
				for e, err := range s.ReadAll(ctx, nil) {
					require.NoError(t, err)
					switch n := counts[e.ID]; {
					case n == 0:
						t.Errorf("event %s/%d was never applied", e.Stream, e.Revision)
					case n == 2 && e.Stream == "b":
						twice++
					case n != 1:
						t.Errorf("event %s/%d was applied %d times", e.Stream, e.Revision, n)
					}
				}
				want := 10 // b's events, past the checkpoint, delivered twice
				if idempotent {
					want = 0
				}
				if twice != want {
					t.Errorf("%d events applied twice, want %d", twice, want)
				}
			})
		})
	}
}

// Workers finish events out of order: a's first event waits for a retry
// while b's events, after it, are handled. The checkpoint must not pass a's
// event until it is handled.
func TestDurableCheckpointContiguous(t *testing.T) {
	for _, workers := range []int{1, 4} {
		t.Run("workers="+strconv.Itoa(workers), func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				appendDeposits(t, s, reg, "a", 1) // position 0
				appendDeposits(t, s, reg, "b", 5) // positions 1-5

				var mu sync.Mutex
				var order []uint64
				failed := false
				bus := newBus(t, nil)
				d := subscribeDurable(t, bus, s, nil, "ledger", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
					mu.Lock()
					defer mu.Unlock()
					if e.Key == "a" && !failed {
						failed = true
						return errors.New("not yet")
					}
					order = append(order, e.Position)
					return nil
				}, &eventbus.DurableOptions{
					CheckpointEvery: 1,
					Subscription:    eventbus.SubscriptionOptions{Workers: workers, Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Second}},
				})
				synctest.Wait()
				if got := d.Checkpoint(); got != 0 {
					t.Errorf("Checkpoint() while position 0 waits for its retry = %d, want 0", got)
				}
				if got := savedCheckpoint(t, s, "ledger"); got > 0 {
					t.Errorf("saved checkpoint while position 0 waits for its retry = %d, want none or 0", got)
				}

				time.Sleep(time.Second) // the retry is due
				synctest.Wait()
				if got := d.Checkpoint(); got != 6 {
					t.Errorf("Checkpoint() after the retry = %d, want 6", got)
				}
				if got := savedCheckpoint(t, s, "ledger"); got != 6 {
					t.Errorf("saved checkpoint after the retry = %d, want 6", got)
				}
				mu.Lock()
				if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 0}, order); diff != "" {
					t.Errorf("handled positions (-want +got):\n%s", diff)
				}
				mu.Unlock()
				require.NoError(t, d.Stop(context.Background()))
				if err := d.Stop(context.Background()); !errors.Is(err, eventbus.ErrClosed) {
					t.Errorf("second Stop() = %v, want %v", err, eventbus.ErrClosed)
				}
			})
		})
	}
}

// TestDurableSaveAfterHeldBack holds the checkpoint back at a's first event,
// which waits for its retry, while CheckpointEvery of b's events, after it,
// finish: the save they make due would save the checkpoint where it was.
// Once a's event is handled, the checkpoint moves past every event, and is
// saved then, not only after CheckpointEvery more events, which might never
// come: a crash would deliver every event again.
func TestDurableSaveAfterHeldBack(t *testing.T) {
	for _, workers := range []int{1, 4} {
		t.Run("workers="+strconv.Itoa(workers), func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				appendDeposits(t, s, reg, "a", 1) // position 0
				appendDeposits(t, s, reg, "b", 5) // positions 1-5
				failed := false
				bus := newBus(t, nil)
				d := subscribeDurable(t, bus, s, nil, "ledger", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
					if e.Key == "a" && !failed {
						failed = true
						return errors.New("not yet")
					}
					return nil
				}, &eventbus.DurableOptions{
					CheckpointEvery: 5, // b's events
					Subscription:    eventbus.SubscriptionOptions{Workers: workers, Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour}},
				})
				synctest.Wait() // b's events are handled, a's waits for its retry
				require.Equal(t, uint64(0), d.Checkpoint(), "while a's event waits")

				time.Sleep(time.Hour) // the retry is due
				synctest.Wait()
				require.Equal(t, uint64(6), d.Checkpoint(), "after a's retry")
				if got := savedCheckpoint(t, s, "ledger"); got != 6 {
					t.Errorf("saved checkpoint once every event is handled = %d, want 6", got)
				}
				require.NoError(t, d.Stop(context.Background()))
			})
		})
	}
}

// slowCheckpointStore holds every save of a durable subscription's
// checkpoint until gate is closed, and counts them.
type slowCheckpointStore struct {
	eventbus.Store
	gate  chan struct{}
	saves atomic.Int32
}

func (s *slowCheckpointStore) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if strings.HasPrefix(stream, "$checkpoint-") {
		s.saves.Add(1)
		<-s.gate
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// TestDurableSlowCheckpointStore holds the first save of the checkpoint in
// the store while events come: handlers do not wait for the save, nor are
// more saves begun meanwhile; once it returns, the saves that fell due
// meanwhile become one, of the latest checkpoint, and Stop, with the
// checkpoint saved last unmoved, saves nothing more.
func TestDurableSlowCheckpointStore(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		slow := &slowCheckpointStore{Store: s, gate: make(chan struct{})}
		bus := newBus(t, nil)
		var handled atomic.Int32
		d := subscribeDurable(t, bus, slow, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			handled.Add(1)
			return nil
		}, &eventbus.DurableOptions{CheckpointEvery: 1})
		appendDeposits(t, s, reg, "a", 1)
		synctest.Wait() // the save after the first event waits
		require.Equal(t, int32(1), slow.saves.Load(), "saves begun after the first event")
		last := appendDeposits(t, s, reg, "a", 9).Position
		synctest.Wait()
		if got := handled.Load(); got != 10 {
			t.Errorf("events handled while a save waits = %d, want 10: handlers do not wait for saves", got)
		}
		require.NoError(t, d.WaitFor(ctx, last))
		if got := slow.saves.Load(); got != 1 {
			t.Errorf("saves begun while the first waits = %d, want 1", got)
		}
		close(slow.gate)
		synctest.Wait()
		if got := slow.saves.Load(); got != 2 {
			t.Errorf("saves once the first returned = %d, want 2: those due meanwhile become one", got)
		}
		if got := savedCheckpoint(t, s, "ledger"); got != int(last)+1 {
			t.Errorf("saved checkpoint = %d, want %d", got, last+1)
		}
		require.NoError(t, d.Stop(ctx))
		if got := slow.saves.Load(); got != 2 {
			t.Errorf("saves after Stop = %d, want 2: the checkpoint saved last did not move", got)
		}
	})
}

// TestDurableCheckpointEvery hands a durable subscription 25 events, one
// at a time, with CheckpointEvery 10: it saves the checkpoint after the
// 10th and the 20th event, no more often, and once more at Stop. The
// checkpoint stream's reads show the latest save only, but ReadAll sees
// every one. (Each save is an event of the store too: the 20th event's
// position is 20, not 19.)
func TestDurableCheckpointEvery(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			return nil
		}, &eventbus.DurableOptions{CheckpointEvery: 10})
		var want []int // after the 10th, the 20th and the last event
		for i := range 25 {
			pos := appendDeposits(t, s, reg, "a", 1).Position
			synctest.Wait() // handled, and saved if due
			if i%10 == 9 || i == 24 {
				want = append(want, int(pos)+1)
			}
		}
		require.NoError(t, d.Stop(ctx))
		var saves []int
		for e, err := range s.ReadAll(ctx, &eventbus.ReadOptions{Filter: eventbus.Filter{StreamPrefix: "$checkpoint-ledger"}}) {
			require.NoError(t, err)
			n, err := strconv.Atoi(string(e.Data))
			require.NoError(t, err)
			saves = append(saves, n)
		}
		if diff := cmp.Diff(want, saves); diff != "" {
			t.Errorf("checkpoints saved (-want +got):\n%s", diff)
		}
	})
}

// TestDurableKeepsItsOptions changes the options it gave SubscribeDurable
// once it has returned, as a caller reusing them for another subscription
// might: the filter's types, the retry policy and the middleware. The
// subscription keeps those it was given, in its run and in its Rebuild's,
// which starts the workers again.
func TestDurableKeepsItsOptions(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		var mu sync.Mutex
		var got []string
		h := func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.Payload.Stream+"/"+e.Payload.Type)
			return nil
		}
		policy := eventbus.RetryPolicy{MaxAttempts: 2}
		pass := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { return next }
		opts := &eventbus.DurableOptions{
			Filter:       eventbus.Filter{Types: []string{"account.deposited"}},
			Subscription: eventbus.SubscriptionOptions{Retry: &policy, Middleware: []eventbus.Middleware{pass}},
		}
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, nil, "ledger", h, opts)
		opts.Filter.Types[0] = "account.withdrawn"
		policy.MaxAttempts = -1
		opts.Subscription.Middleware[0] = nil

		appendDeposits(t, s, reg, "a", 1)
		e, err := reg.Encode(Withdrawn{Amount: 1})
		require.NoError(t, err)
		_, err = s.Append(ctx, "a", eventbus.Any, e)
		require.NoError(t, err)
		last := appendDeposits(t, s, reg, "a", 1).Position
		check := func(when string) {
			t.Helper()
			err := d.WaitFor(ctx, last)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Fatalf("WaitFor(%d) %s = %v, having handled %q", last, when, err, got)
			}
			if diff := cmp.Diff([]string{"a/account.deposited", "a/account.deposited"}, got); diff != "" {
				t.Errorf("events handled %s (-want +got):\n%s", when, diff)
			}
			got = nil
		}
		check("by the first run")
		require.NoError(t, d.Rebuild(ctx, nil))
		check("by the rebuild")
		require.NoError(t, d.Stop(ctx))
	})
}

// A dead-lettered event is finished: the checkpoint passes it.
func TestDurableDeadLetterAdvances(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		appendDeposits(t, s, reg, "a", 3)
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, reg, "ledger", func(ctx context.Context, e eventbus.Event[Withdrawn]) error {
			return nil // every event selected is a Deposited: none decodes
		}, &eventbus.DurableOptions{Filter: eventbus.Filter{Types: []string{"account.deposited"}}})
		require.NoError(t, d.WaitFor(context.Background(), 2))
		if n := bus.DeadLetters().Len(); n != 3 {
			t.Errorf("DeadLetters().Len() = %d, want 3 events that did not decode", n)
		}
		require.NoError(t, d.Stop(context.Background()))
		if got := savedCheckpoint(t, s, "ledger"); got != 3 {
			t.Errorf("saved checkpoint = %d, want 3", got)
		}
	})
}

// TestDurableSelectsItsType subscribes durably with handlers of one
// concrete payload type, Withdrawn, to a stream of deposits and
// withdrawals, with no filter and with one of streams only: each handles
// the withdrawals and dead-letters nothing, since a filter without Types
// selects the handler's own event type. An interface handler gets both
// types, as before.
func TestDurableSelectsItsType(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		var last uint64
		for i := range 4 {
			var p any = Deposited{Amount: i}
			if i%2 == 1 {
				p = Withdrawn{Amount: i}
			}
			e, err := reg.Encode(p)
			require.NoError(t, err)
			res, err := s.Append(ctx, "account-1", eventbus.Any, e)
			require.NoError(t, err)
			last = res.Position
		}
		bus := newBus(t, nil)
		var mu sync.Mutex
		got := map[string][]string{}
		record := func(name string, p any) {
			mu.Lock()
			defer mu.Unlock()
			got[name] = append(got[name], fmt.Sprint(p))
		}
		var subs []*eventbus.Durable
		for name, opts := range map[string]*eventbus.DurableOptions{
			"nil":    nil,
			"prefix": {Filter: eventbus.Filter{StreamPrefix: "account-"}},
		} {
			subs = append(subs, subscribeDurable(t, bus, s, reg, name, func(_ context.Context, e eventbus.Event[Withdrawn]) error {
				record(name, e.Payload)
				return nil
			}, opts))
		}
		subs = append(subs, subscribeDurable(t, bus, s, reg, "any", func(_ context.Context, e eventbus.Event[any]) error {
			record("any", e.Payload)
			return nil
		}, nil))
		for _, d := range subs {
			require.NoError(t, d.WaitFor(ctx, last))
		}
		if n := bus.DeadLetters().Len(); n != 0 {
			t.Errorf("DeadLetters().Len() = %d, want 0", n)
		}
		mu.Lock()
		defer mu.Unlock()
		want := map[string][]string{
			"nil":    {"{1}", "{3}"},
			"prefix": {"{1}", "{3}"},
			"any":    {"{0}", "{1}", "{2}", "{3}"},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("events handled (-want +got):\n%s", diff)
		}
	})
}

// TestDurableOutlivesItsContext cancels the context given to
// SubscribeDurable and StoreTopic.Subscribe once they have returned, as a
// caller starting its projections with a request's or a test's context
// does: the subscriptions go on reading the store and handling what is
// appended after, until Stop, since that context bounds only the read of
// the checkpoint.
func TestDurableOutlivesItsContext(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		bus := newBus(t, nil)
		deposits, err := eventbus.NewStoreTopic[Deposited](bus, s, reg, "deposits")
		require.NoError(t, err)
		var handled atomic.Int32
		h := func(context.Context, eventbus.Event[Deposited]) error {
			handled.Add(1)
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		audit, err := eventbus.SubscribeDurable(ctx, bus, s, reg, "audit", h, nil)
		require.NoError(t, err)
		topicSub, err := deposits.Subscribe(ctx, "mailer", h, nil)
		require.NoError(t, err)
		cancel()
		synctest.Wait() // a subscription that its context ended has stopped

		res, err := deposits.Publish(context.Background(), Deposited{Amount: 1})
		require.NoError(t, err)
		wait, stop := context.WithTimeout(context.Background(), time.Hour)
		defer stop()
		for _, d := range []*eventbus.Durable{audit, topicSub} {
			if err := d.Err(); err != nil {
				t.Errorf("%s: Err() after its context was cancelled = %v, want nil", d.Name(), err)
			}
			if err := d.WaitFor(wait, res.Position); err != nil {
				t.Errorf("%s: WaitFor(the deposit) after its context was cancelled = %v, want nil", d.Name(), err)
			}
			require.NoError(t, d.Stop(context.Background()), d.Name())
		}
		if got := handled.Load(); got != 2 {
			t.Errorf("events handled after the contexts were cancelled = %d, want 2: the deposit, by each", got)
		}
	})
}

// TestDurableResumeOnSameBus stops a durable subscription and starts it
// again on the same bus: it resumes from its checkpoint.
func TestDurableResumeOnSameBus(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		var rec positions
		h := rec.handle
		appendDeposits(t, s, reg, "a", 3)
		d := subscribeDurable(t, bus, s, reg, "ledger", h, nil)
		require.NoError(t, d.WaitFor(ctx, 2))
		require.NoError(t, d.Stop(ctx))

		last := appendDeposits(t, s, reg, "a", 2).Position // after the saved checkpoint
		d = subscribeDurable(t, bus, s, reg, "ledger", h, nil)
		_, err := eventbus.SubscribeDurable(ctx, bus, s, reg, "ledger", h, nil)
		require.ErrorIs(t, err, eventbus.ErrDuplicate, "while it runs")
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))
		require.Equal(t, []uint64{0, 1, 2, last - 1, last}, rec.take(), "each deposit once, in order")
	})
}

// TestDurableTopicNotTakenOver makes topics of its own named like the
// internal topics of durable subscriptions ("durable." and the name): the
// durable subscriptions are refused with ErrDuplicate, and the topics keep
// their events to themselves. A durable subscription stopped on the bus
// still starts again on its own topic (see also TestDurableResumeOnSameBus).
func TestDurableTopicNotTakenOver(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		var mu sync.Mutex
		got := map[string]int{}
		h := func(topic string) eventbus.Handler[eventbus.RecordedEvent] {
			return func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
				mu.Lock()
				defer mu.Unlock()
				got[topic]++
				return nil
			}
		}
		mine := newTopic[eventbus.RecordedEvent](t, bus, "durable.ledger", nil)
		newTopic[Deposited](t, bus, "durable.audit", nil)
		last := appendDeposits(t, s, reg, "a", 2).Position
		for _, name := range []string{"ledger", "audit"} {
			if _, err := eventbus.SubscribeDurable(ctx, bus, s, nil, name, h("durable."+name), nil); !errors.Is(err, eventbus.ErrDuplicate) {
				t.Errorf("SubscribeDurable(%q) with a topic %q of the bus's user = %v, want %v", name, "durable."+name, err, eventbus.ErrDuplicate)
			}
		}
		subscribe(t, mine, "mine", h("mine"), nil)

		d := subscribeDurable(t, bus, s, nil, "projection", h("durable.projection"), nil)
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))
		more := appendDeposits(t, s, reg, "a", 1).Position
		d = subscribeDurable(t, bus, s, nil, "projection", h("durable.projection"), nil)
		require.NoError(t, d.WaitFor(ctx, more))

		synctest.Wait()
		require.NoError(t, bus.Shutdown(ctx))
		require.Equal(t, map[string]int{"durable.projection": 3}, got)
	})
}

func TestSubscribeDurableInvalid(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newBankRegistry(t)
	bus := newBus(t, nil)
	h := func(context.Context, eventbus.Event[Deposited]) error { return nil }
	badWorkers := &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Workers: -1}}
	// The cases run in order: some take names that later ones reuse.
	tests := []struct {
		name    string
		bus     *eventbus.Bus
		store   eventbus.Store
		reg     *eventbus.Registry
		sub     string
		h       eventbus.Handler[Deposited]
		opts    *eventbus.DurableOptions
		wantErr error
	}{
		{"bad name", bus, s, reg, "a b", h, nil, eventbus.ErrInvalid},
		{"name over 240 bytes", bus, s, reg, strings.Repeat("d", 241), h, nil, eventbus.ErrInvalid},
		{"name of 240 bytes", bus, s, reg, strings.Repeat("d", 240), h, nil, nil},
		{"nil bus", nil, s, reg, "x", h, nil, eventbus.ErrInvalid},
		{"nil store", bus, nil, reg, "x", h, nil, eventbus.ErrInvalid},
		{"nil registry", bus, s, nil, "x", h, nil, eventbus.ErrInvalid},
		{"zero registry", bus, s, new(eventbus.Registry), "x", h, nil, eventbus.ErrInvalid},
		{"nil handler", bus, s, reg, "x", nil, nil, eventbus.ErrInvalid},
		{"negative checkpoint interval", bus, s, reg, "x", h, &eventbus.DurableOptions{CheckpointEvery: -1}, eventbus.ErrInvalid},
		{"bad workers", bus, s, reg, "x", h, badWorkers, eventbus.ErrInvalid},
		{"the same name, right", bus, s, reg, "x", h, nil, nil},
		{"taken name", bus, s, reg, "x", h, nil, eventbus.ErrDuplicate},
	}
	for _, tt := range tests {
		_, err := eventbus.SubscribeDurable(context.Background(), tt.bus, tt.store, tt.reg, tt.sub, tt.h, tt.opts)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: SubscribeDurable(%q) = %v, want %v", tt.name, tt.sub, err, tt.wantErr)
		}
	}
	require.NoError(t, bus.Close())
	if _, err := eventbus.SubscribeDurable(context.Background(), bus, s, reg, "late", h, nil); !errors.Is(err, eventbus.ErrClosed) {
		t.Errorf("SubscribeDurable() after Close = %v, want %v", err, eventbus.ErrClosed)
	}
}

// A handler cannot stop its own subscription: Stop would wait for it.
func TestDurableStopFromHandler(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		var d *eventbus.Durable
		var stopErr error
		ready := make(chan struct{})
		d = subscribeDurable(t, bus, s, nil, "ledger", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			<-ready
			stopErr = d.Stop(ctx)
			return nil
		}, nil)
		close(ready)
		require.NoError(t, d.WaitFor(context.Background(), 0))
		if !errors.Is(stopErr, eventbus.ErrInvalid) {
			t.Errorf("Stop(handler's context) = %v, want %v", stopErr, eventbus.ErrInvalid)
		}
		require.NoError(t, d.Stop(context.Background()))
	})
}

// A handler cannot rebuild its own subscription either: Rebuild refuses
// it as Stop does, naming itself, and the subscription runs on.
func TestDurableRebuildFromHandler(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		var d *eventbus.Durable
		var rebuildErr error
		ready := make(chan struct{})
		d = subscribeDurable(t, bus, s, nil, "ledger", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			<-ready
			if e.Position == 0 {
				rebuildErr = d.Rebuild(ctx, nil)
			}
			return nil
		}, nil)
		close(ready)
		require.NoError(t, d.WaitFor(ctx, 0))
		if !errors.Is(rebuildErr, eventbus.ErrInvalid) || !strings.Contains(rebuildErr.Error(), "Durable.Rebuild") {
			t.Errorf("Rebuild(handler's context) = %v, want %v naming Durable.Rebuild", rebuildErr, eventbus.ErrInvalid)
		}
		more := appendDeposits(t, s, reg, "a", 1).Position
		require.NoError(t, d.WaitFor(ctx, more), "the subscription runs on")
		require.NoError(t, d.Stop(ctx))
	})
}

// A Rebuild's reset cannot stop or rebuild its subscription either, with
// the context it was given, nor can the reset of a Rebuild of another
// subscription that it calls: Stop and Rebuild would wait for the
// Rebuild, which waits for reset, so they refuse it, naming themselves,
// and the Rebuild goes on to start the subscription again.
func TestDurableStopFromRebuildReset(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		ok := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
		d := subscribeDurable(t, bus, s, nil, "ledger", ok, nil)
		other := subscribeDurable(t, bus, s, nil, "audit", ok, nil)
		var stopErr, rebuildErr, nestedErr error
		require.NoError(t, d.Rebuild(ctx, func(ctx context.Context) error {
			stopErr = d.Stop(ctx)
			rebuildErr = d.Rebuild(ctx, nil)
			return other.Rebuild(ctx, func(ctx context.Context) error {
				nestedErr = d.Stop(ctx)
				return nil
			})
		}))
		for _, c := range []struct {
			call, where string
			err         error
		}{
			{"Durable.Stop", "its reset", stopErr},
			{"Durable.Rebuild", "its reset", rebuildErr},
			{"Durable.Stop", "another's reset within its reset", nestedErr},
		} {
			if !errors.Is(c.err, eventbus.ErrInvalid) || !strings.Contains(c.err.Error(), c.call) {
				t.Errorf("%s in %s = %v, want %v naming %s", c.call, c.where, c.err, eventbus.ErrInvalid, c.call)
			}
		}
		more := appendDeposits(t, s, reg, "a", 1).Position
		require.NoError(t, d.WaitFor(ctx, more), "the subscription runs on")
		require.NoError(t, errors.Join(d.Stop(ctx), other.Stop(ctx)))
	})
}

// TestDurableResetContextAfterReset keeps the context that a Rebuild gives
// its reset and calls Rebuild, then Stop, with it once reset has returned:
// Stop and Rebuild refuse that context only while reset runs, as their
// docs say, so neither may be refused then (a reset that hands its context
// to a goroutine of its own, which stops the subscription later, say).
func TestDurableResetContextAfterReset(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		ok := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
		d := subscribeDurable(t, bus, s, nil, "ledger", ok, nil)
		var kept context.Context
		require.NoError(t, d.Rebuild(ctx, func(ctx context.Context) error {
			kept = ctx
			return nil
		}))
		require.NoError(t, d.Rebuild(kept, nil), "Rebuild with the context of a reset that returned")
		more := appendDeposits(t, s, reg, "a", 1).Position
		require.NoError(t, d.WaitFor(ctx, more), "the subscription runs on")
		require.NoError(t, d.Stop(kept), "Stop with the context of a reset that returned")
		require.ErrorIs(t, d.Err(), eventbus.ErrClosed)
	})
}

// TestDurableResetReturnsRefusedStop rebuilds with a reset that returns
// the error of a Stop it called with its context, which wraps ErrInvalid
// as the refusal of a Rebuild's own bad context does: Rebuild's doc says
// that reset's error leaves the subscription stopped whatever it wraps,
// and that Err, not errors.Is, tells whether it runs.
func TestDurableResetReturnsRefusedStop(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		ok := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
		d := subscribeDurable(t, bus, s, nil, "ledger", ok, nil)
		err := d.Rebuild(ctx, func(ctx context.Context) error { return d.Stop(ctx) })
		require.ErrorIs(t, err, eventbus.ErrInvalid)
		require.ErrorContains(t, err, "Rebuild's reset")
		require.ErrorIs(t, d.Err(), eventbus.ErrClosed, "stopped by reset's error")
		require.ErrorIs(t, d.Stop(ctx), eventbus.ErrClosed)
	})
}

func TestStoreProcessed(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		p := eventbus.NewStoreProcessed(s)
		for _, k := range []eventbus.IdempotencyKey{
			{Subscription: "ledger", ID: eventbus.NewID()},
			{Subscription: "ledger", Key: "order-1"},
			{Subscription: "ledger", Key: strings.Repeat("k", 1020)}, // too long for a stream name
			{Subscription: "ledger", Key: "\xff\xfe"},                // not UTF-8
		} {
			done, err := p.Processed(ctx, k)
			require.NoError(t, err)
			if done {
				t.Errorf("Processed(%+v) before MarkProcessed = true", k)
			}
			cancelled, cancel := context.WithCancel(ctx)
			cancel() // the bus closed as the handler returned: record it anyway
			require.NoError(t, p.MarkProcessed(cancelled, k))
			require.NoError(t, p.MarkProcessed(ctx, k)) // a redriven event
			p = eventbus.NewStoreProcessed(reopen())    // it is remembered across restarts
			done, err = p.Processed(ctx, k)
			require.NoError(t, err)
			if !done {
				t.Errorf("Processed(%+v) after MarkProcessed = false", k)
			}
			other := k
			other.Subscription = "other"
			if done, _ := p.Processed(ctx, other); done {
				t.Errorf("Processed(%+v) of another subscription = true", other)
			}
		}
		// Two keys whose streams met when subscription and key were
		// joined by '-'.
		id := eventbus.NewID()
		require.NoError(t, p.MarkProcessed(ctx, eventbus.IdempotencyKey{Subscription: "a-key-x", ID: id}))
		done, err := p.Processed(ctx, eventbus.IdempotencyKey{Subscription: "a", Key: "x-" + id.String()})
		require.NoError(t, err)
		require.False(t, done, "another subscription's record")
	})
}

// TestDurableNameTakenWhileStopping starts a durable subscription of the
// same name while the first one's Stop waits for a handler, and while its
// Rebuild resets the read model: both are refused with ErrDuplicate, so
// that no event of a stream is handled by two subscriptions at once.
func TestDurableNameTakenWhileStopping(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 2)
		bus := newBus(t, nil)
		release := make(chan struct{})
		var mu sync.Mutex
		running, most := 0, 0
		h := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			<-release
			mu.Lock()
			running--
			mu.Unlock()
			return nil
		}
		d := subscribeDurable(t, bus, s, nil, "ledger", h, nil)
		synctest.Wait() // a's first event is being handled
		stopped := make(chan error)
		go func() { stopped <- d.Stop(ctx) }()
		synctest.Wait() // Stop waits for the handler
		if d2, err := eventbus.SubscribeDurable(ctx, bus, s, nil, "ledger", h, nil); !errors.Is(err, eventbus.ErrDuplicate) {
			t.Errorf("SubscribeDurable() while the other stops = %v, want %v", err, eventbus.ErrDuplicate)
			if err == nil {
				defer func() { require.NoError(t, d2.Stop(ctx)) }()
			}
		}
		synctest.Wait()
		close(release)
		require.NoError(t, <-stopped)
		if most != 1 {
			t.Errorf("%d handlers of stream a ran at once, want 1", most)
		}

		d = subscribeDurable(t, bus, s, nil, "ledger", h, nil) // stopped: it resumes
		require.NoError(t, d.Rebuild(ctx, func(context.Context) error {
			d2, err := eventbus.SubscribeDurable(ctx, bus, s, nil, "ledger", h, nil)
			if !errors.Is(err, eventbus.ErrDuplicate) {
				t.Errorf("SubscribeDurable() while the other rebuilds = %v, want %v", err, eventbus.ErrDuplicate)
				if err == nil {
					require.NoError(t, d2.Stop(ctx))
				}
			}
			return nil
		}))
		require.NoError(t, d.WaitFor(ctx, 1))
		require.NoError(t, d.Stop(ctx))
	})
}

// TestDurableCheckpointStreamBounded checks that checkpoints do not pile
// up: only the latest is ever read, so the checkpoint stream keeps only
// that one, also after a restart, from which the subscription resumes.
func TestDurableCheckpointStreamBounded(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		var rec positions
		h := rec.handle
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, reg, "ledger", h, &eventbus.DurableOptions{CheckpointEvery: 1})
		var last uint64
		for range 20 {
			last = appendDeposits(t, s, reg, "a", 1).Position
			require.NoError(t, d.WaitFor(ctx, last))
		}
		require.NoError(t, bus.Shutdown(ctx))
		check := func(s eventbus.Store) {
			t.Helper()
			if n := streamLen(t, s, "$checkpoint-ledger"); n != 1 {
				t.Errorf("the checkpoint stream holds %d checkpoints, want 1", n)
			}
			if got := savedCheckpoint(t, s, "ledger"); got <= int(last) {
				t.Errorf("saved checkpoint = %d, want past %d", got, last)
			}
		}
		check(s)
		s = reopen()
		check(s)

		more := appendDeposits(t, s, reg, "a", 1).Position
		bus = newBus(t, nil)
		d = subscribeDurable(t, bus, s, reg, "ledger", h, nil)
		require.NoError(t, d.WaitFor(ctx, more))
		require.NoError(t, d.Stop(ctx))
		got := rec.take()
		require.Len(t, got, 21)
		require.Equal(t, more, got[20], "the last handled")
	})
}

// TestDurableAfterRetention stops a durable subscription over a FileStore
// whose retention, while it is stopped, deletes the events after its
// checkpoint that it never read, and the checkpoint with its segment, as
// Durable's doc says it may: the next run starts from the first event
// left, handles each event left once, with no error, and so does a
// Rebuild.
func TestDurableAfterRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := openFile(t, t.TempDir(), &eventbus.FileStoreOptions{Sync: eventbus.SyncNever, MaxSegmentSize: 4 << 10, RetainSize: 16 << 10})
		reg := newBankRegistry(t)
		var rec positions
		h := rec.handle
		handled := rec.take
		// The events left, which no save of a checkpoint deletes
		// meanwhile: none is due before Stop.
		kept := func() []uint64 {
			var out []uint64
			for e, err := range s.ReadAll(ctx, nil) {
				require.NoError(t, err)
				out = append(out, e.Position)
			}
			return out
		}
		opts := &eventbus.DurableOptions{CheckpointEvery: 1 << 30}
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, reg, "ledger", h, opts)
		read := appendDeposits(t, s, reg, "a", 10).Position
		require.NoError(t, d.WaitFor(ctx, read))
		require.NoError(t, d.Stop(ctx))
		require.Len(t, handled(), 10)
		saved := savedCheckpoint(t, s, "ledger")
		require.Equal(t, int(read)+1, saved)

		last := appendDeposits(t, s, reg, "b", 1000).Position
		require.Equal(t, -1, savedCheckpoint(t, s, "ledger"), "retention deleted the checkpoint")
		left := kept()
		require.Greater(t, left[0], uint64(saved)+1, "retention deleted events never read")

		d = subscribeDurable(t, bus, s, reg, "ledger", h, opts)
		require.NoError(t, d.WaitFor(ctx, last))
		if diff := cmp.Diff(left, handled()); diff != "" {
			t.Errorf("handled after the restart (-want +got):\n%s", diff)
		}
		require.NoError(t, d.Err())

		require.NoError(t, d.Rebuild(ctx, nil))
		require.NoError(t, d.WaitFor(ctx, last))
		left = kept() // Rebuild saved checkpoints before it read
		if diff := cmp.Diff(left, handled()); diff != "" {
			t.Errorf("handled by Rebuild (-want +got):\n%s", diff)
		}
		require.NoError(t, d.Stop(ctx))
	})
}

// TestDurableStoreClosed closes the store under a running durable
// subscription, whose checkpoint is saved: it stops reading, and Stop
// says why.
func TestDurableStoreClosed(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "a", 3).Position
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, &eventbus.DurableOptions{CheckpointEvery: 1})
		require.NoError(t, d.WaitFor(ctx, last))
		synctest.Wait() // the checkpoint is saved
		// Past last, and maybe past the checkpoints saved after it, which
		// the subscription skips once it has caught up with the store.
		require.Greater(t, savedCheckpoint(t, s, "ledger"), int(last))
		require.NoError(t, s.Close())
		synctest.Wait()
		if err := d.Stop(ctx); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("Stop() after the store closed = %v, want %v", err, eventbus.ErrClosed)
		}
	})
}

// TestShutdownReportsUnsavedCheckpoint closes the store before the bus, a
// mistake of order easy to make with defers: the final checkpoint save of
// the durable subscription, which had handled events since its last save,
// fails, and Bus.Shutdown must say so, since its next run handles those
// events again. It returned nil, and only a Logger, if any, heard of it.
func TestShutdownReportsUnsavedCheckpoint(t *testing.T) {
	ctx := context.Background()
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	last := appendDeposits(t, s, newBankRegistry(t), "a", 3).Position
	bus, err := eventbus.New(nil)
	require.NoError(t, err)
	d := subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, nil)
	require.NoError(t, d.WaitFor(ctx, last))
	require.Equal(t, -1, savedCheckpoint(t, s, "ledger"), "CheckpointEvery 100: nothing saved yet")
	require.NoError(t, s.Close())
	err = bus.Shutdown(ctx)
	require.ErrorIs(t, err, eventbus.ErrClosed, "the store's error")
	require.ErrorContains(t, err, `durable subscription "ledger": saving its final checkpoint`)
	var ue *eventbus.UndeliveredError
	require.False(t, errors.As(err, &ue), "nothing was undelivered")
	require.Equal(t, err, bus.Close(), "later calls return the same")
}

// waitSaved waits until the durable subscription name has saved a
// checkpoint of at least pos in s.
func waitSaved(t *testing.T, s eventbus.Store, name string, pos uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for e, err := range s.Subscribe(ctx, &eventbus.SubscribeOptions{Filter: eventbus.Filter{StreamPrefix: "$checkpoint-" + name}}) {
		require.NoError(t, err)
		if e.Stream != "$checkpoint-"+name {
			continue
		}
		n, err := strconv.ParseUint(string(e.Data), 10, 64)
		require.NoError(t, err)
		if n >= pos {
			return
		}
	}
}

// TestDurableSkipsItsOwnStreams subscribes to every system stream, saving
// the checkpoint after each event, with and without the Idempotency
// middleware over the store: the subscription never handles its own
// checkpoints and processed records, each of which would make another, for
// ever, and the checkpoint moves past them, so that it resumes past them
// too.
func TestDurableSkipsItsOwnStreams(t *testing.T) {
	for _, idempotent := range []bool{false, true} {
		t.Run("idempotent="+strconv.FormatBool(idempotent), func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
				ctx := context.Background()
				var want []string
				audit := func() uint64 {
					t.Helper()
					res, err := s.Append(ctx, "$audit", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "audited"})
					require.NoError(t, err)
					want = append(want, "$audit/"+strconv.FormatUint(res.Revision, 10))
					return res.Position
				}
				var mu sync.Mutex
				var got []string
				h := func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
					mu.Lock()
					defer mu.Unlock()
					got = append(got, e.Payload.Stream+"/"+strconv.FormatUint(e.Payload.Revision, 10))
					return nil
				}
				opts := &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "$"}, CheckpointEvery: 1}
				if idempotent {
					opts.Subscription.Middleware = []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(s)})}
				}
				check := func(when string) {
					t.Helper()
					mu.Lock()
					defer mu.Unlock()
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("events handled %s (-want +got):\n%s", when, diff)
					}
				}

				for range 3 {
					audit()
				}
				bus := newBus(t, nil)
				d := subscribeDurable(t, bus, s, nil, "ledger", h, opts)
				waitSaved(t, s, "ledger", 3) // after the audit events, and their processed records
				last := audit()
				require.NoError(t, d.WaitFor(ctx, last)) // every event before it is finished or skipped
				require.NoError(t, d.Stop(ctx))
				check("by the first run")

				more := audit()
				d = subscribeDurable(t, bus, s, nil, "ledger", h, opts)
				require.NoError(t, d.WaitFor(ctx, more))
				require.NoError(t, d.Stop(ctx))
				check("after resuming")
			})
		})
	}
}

// TestDurableDeadLetterSinkFails dead-letters a's second event in the first
// run of a durable subscription, stops it, and runs it again on another
// bus. A dead letter that the sink failed to keep lives only in the first
// bus's memory: the checkpoint stays before it, and the second run
// delivers it again, with the events after it. One that the sink kept, or
// one of a bus without a sink, is not delivered again, nor one that the
// sink failed to keep and that Discard removed, which let the checkpoint
// pass it (it held it back for the rest of the run), nor one that the sink
// failed to keep whose redrive was handled once its handler was fixed.
func TestDurableDeadLetterSinkFails(t *testing.T) {
	kept := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return nil })
	lost := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("disk full") })
	for _, tt := range []struct {
		name    string
		sink    eventbus.DeadLetterSink
		discard bool // Discard the dead letter before the first run stops
		redrive bool // fix the handler and redrive the dead letter instead
		again   bool // the dead letter is delivered again
	}{
		{"no sink", nil, false, false, false},
		{"sink keeps it", kept, false, false, false},
		{"sink fails", lost, false, false, true},
		{"sink fails, discarded", lost, true, false, false},
		{"sink fails, redriven", lost, false, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, false, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
				ctx := context.Background()
				appendDeposits(t, s, reg, "a", 3) // positions 0-2
				last := appendDeposits(t, s, reg, "b", 2).Position
				const poison = 1
				var mu sync.Mutex
				var handled []uint64
				var fixed atomic.Bool
				handler := func(first bool) eventbus.Handler[eventbus.RecordedEvent] {
					return func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
						if first && e.Position == poison && !fixed.Load() {
							return eventbus.Permanent(errors.New("poison"))
						}
						mu.Lock()
						defer mu.Unlock()
						handled = append(handled, e.Position)
						return nil
					}
				}

				bus := newBus(t, &eventbus.Options{DeadLetterSink: tt.sink})
				d := subscribeDurable(t, bus, s, nil, "ledger", handler(true), &eventbus.DurableOptions{CheckpointEvery: 1})
				require.NoError(t, d.WaitFor(ctx, last), "the run goes on past the dead letter")
				dead := 1
				if tt.discard {
					require.Equal(t, 1, bus.DeadLetters().Discard(eventbus.DeadLetterFilter{}))
					dead = 0
				}
				if tt.redrive {
					fixed.Store(true)
					n, err := bus.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
					require.NoError(t, err)
					require.Equal(t, 1, n)
					require.NoError(t, bus.Flush(ctx))
					dead = 0
				}
				// Past last, it may be past the checkpoints saved after it
				// too, once the subscription has caught up with the store.
				checkpoint := func(what string, got uint64) {
					t.Helper()
					if tt.again && got != poison {
						t.Errorf("%s = %d, want %d", what, got, poison)
					}
					if !tt.again && got <= last {
						t.Errorf("%s = %d, want past %d", what, got, last)
					}
				}
				checkpoint("Checkpoint()", d.Checkpoint())
				require.NoError(t, d.Stop(ctx))
				require.Equal(t, dead, bus.DeadLetters().Len())
				saved := savedCheckpoint(t, s, "ledger")
				require.GreaterOrEqual(t, saved, 0, "a checkpoint is saved")
				checkpoint("saved checkpoint", uint64(saved))

				s = reopen()
				mu.Lock()
				handled = nil
				mu.Unlock()
				more := appendDeposits(t, s, reg, "c", 1).Position
				d = subscribeDurable(t, newBus(t, nil), s, nil, "ledger", handler(false), nil)
				require.NoError(t, d.WaitFor(ctx, more))
				require.NoError(t, d.Stop(ctx))
				wantHandled := []uint64{more}
				if tt.again {
					wantHandled = []uint64{poison, 2, 3, last, more}
				}
				mu.Lock()
				defer mu.Unlock()
				slices.Sort(handled)
				if diff := cmp.Diff(wantHandled, handled); diff != "" {
					t.Errorf("positions handled by the second run (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestDurableSinkKeepsDuringClose fails a durable subscription's event for
// good before any stop, and closes the bus while the DeadLetterSink's Put
// of it runs and then succeeds: as the sink's doc says, the checkpoint
// moves past a dead letter that Put kept, so the next run does not deliver
// it again. Whether a stop made the event fail is decided when it failed;
// it was decided after Put returned, so a Close during a slow Put (a
// database write, say) left the checkpoint before the event, and the next
// run handled it once more, while the sink kept its copy for a redrive.
func TestDurableSinkKeepsDuringClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		reg := newBankRegistry(t)
		first := appendDeposits(t, s, reg, "a", 1).Position

		entered, release := make(chan struct{}), make(chan struct{})
		var sunk []eventbus.DeadLetter
		sink := eventbus.DeadLetterFunc(func(_ context.Context, dl eventbus.DeadLetter) error {
			close(entered)
			<-release // a slow write somewhere durable
			sunk = append(sunk, dl)
			return nil // kept
		})
		bus, err := eventbus.New(&eventbus.Options{DeadLetterSink: sink})
		require.NoError(t, err)
		errPoison := errors.New("poison")
		subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return errPoison }, nil)

		<-entered // the event failed for good, before any stop: the sink runs
		closed := make(chan error, 1)
		go func() { closed <- bus.Close() }()
		synctest.Wait() // Close has cancelled the handlers' contexts, and waits for the worker
		close(release)
		require.NoError(t, <-closed)

		require.Len(t, sunk, 1)
		require.Equal(t, 1, sunk[0].Attempt, "a failure of its own, not an abandoned event")
		require.ErrorIs(t, sunk[0].Err, errPoison)
		if saved := savedCheckpoint(t, s, "ledger"); saved <= int(first) {
			t.Errorf("saved checkpoint = %d, want past %d: the sink kept the dead letter of an event that failed before the stop", saved, first)
		}

		var again []uint64
		d := subscribeDurable(t, newBus(t, nil), s, nil, "ledger", func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			again = append(again, e.Position)
			return nil
		}, nil)
		more := appendDeposits(t, s, reg, "b", 1).Position
		require.NoError(t, d.WaitFor(ctx, more))
		require.NoError(t, d.Stop(ctx))
		require.Equal(t, []uint64{more}, again, "the next run delivers the new event alone")
	})
}

// TestDurableRedriveCutByClose redrives a durable subscription's dead
// letter, which the sink kept, and closes the bus while the redrive runs:
// as the DeadLetterSink doc says, the checkpoint, which passed the event
// when the sink kept its dead letter, stays where it is, so the next run
// does not deliver the event again, and the sink has the cut copy too.
func TestDurableRedriveCutByClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		reg := newBankRegistry(t)
		var mu sync.Mutex
		var sunk []eventbus.DeadLetter
		sink := eventbus.DeadLetterFunc(func(_ context.Context, dl eventbus.DeadLetter) error {
			mu.Lock()
			defer mu.Unlock()
			sunk = append(sunk, dl)
			return nil
		})
		bus1 := newBus(t, &eventbus.Options{DeadLetterSink: sink})
		attempts := 0
		d1 := subscribeDurable(t, bus1, s, nil, "ledger", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			attempts++
			if attempts == 1 {
				return eventbus.Permanent(errors.New("bad"))
			}
			<-ctx.Done() // the redrive runs until Close cuts it short
			return ctx.Err()
		}, nil)
		pos := appendDeposits(t, s, reg, "a", 1).Position
		require.NoError(t, d1.WaitFor(ctx, pos)) // dead-lettered, kept: finished
		n, err := bus1.DeadLetters().Redrive(ctx, eventbus.DeadLetterFilter{})
		require.NoError(t, err)
		require.Equal(t, 1, n)
		synctest.Wait() // the redriven attempt runs
		_ = bus1.Close()

		mu.Lock()
		require.Len(t, sunk, 2)
		cut := sunk[1]
		mu.Unlock()
		require.ErrorIs(t, cut.Err, context.Canceled, "the redrive, cut short by Close")

		bus2 := newBus(t, nil)
		var delivered []uint64
		d2 := subscribeDurable(t, bus2, s, nil, "ledger", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			delivered = append(delivered, e.Position)
			return nil
		}, nil)
		synctest.Wait()
		require.NoError(t, d2.Stop(ctx))
		if len(delivered) != 0 {
			t.Errorf("the next run delivered %v: the checkpoint had passed the event, whose dead letter the sink kept", delivered)
		}
	})
}

// TestDurableDiscardStoppedRunsDeadLetter rebuilds a durable subscription
// whose dead letter the sink failed to keep, and whose new run
// dead-letters the same event again, lost again: discarding the first
// run's dead letter must not let the checkpoint pass the event, which
// only the new run's dead letter, in memory, still holds (as Discard's
// doc says, one of a run that has stopped holds nothing back); discarding
// the new run's does.
func TestDurableDiscardStoppedRunsDeadLetter(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 2) // positions 0-1
		last := appendDeposits(t, s, reg, "b", 2).Position
		const poison = 1
		errFirst, errSecond := errors.New("first run"), errors.New("second run")
		var run atomic.Pointer[error]
		run.Store(&errFirst)
		handler := func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			if e.Position == poison {
				return eventbus.Permanent(*run.Load())
			}
			return nil
		}
		lost := eventbus.DeadLetterFunc(func(context.Context, eventbus.DeadLetter) error { return errors.New("disk full") })
		bus := newBus(t, &eventbus.Options{DeadLetterSink: lost})
		d := subscribeDurable(t, bus, s, nil, "ledger", handler, &eventbus.DurableOptions{CheckpointEvery: 1})
		require.NoError(t, d.WaitFor(ctx, last))
		require.Equal(t, uint64(poison), d.Checkpoint(), "held by the first run's dead letter")

		run.Store(&errSecond)
		require.NoError(t, d.Rebuild(ctx, nil))
		require.NoError(t, d.WaitFor(ctx, last))
		require.Equal(t, uint64(poison), d.Checkpoint(), "held by the second run's dead letter")

		dlq := bus.DeadLetters()
		if n := dlq.Discard(eventbus.DeadLetterFilter{Err: errFirst}); n != 1 {
			t.Fatalf("Discard(the first run's) = %d, want 1", n)
		}
		if got := d.Checkpoint(); got != poison {
			t.Errorf("Checkpoint() after discarding the first run's dead letter = %d, want %d: the second run's holds it", got, poison)
		}
		if n := dlq.Discard(eventbus.DeadLetterFilter{Err: errSecond}); n != 1 {
			t.Fatalf("Discard(the second run's) = %d, want 1", n)
		}
		if got := d.Checkpoint(); got <= last {
			t.Errorf("Checkpoint() after discarding the second run's dead letter = %d, want past %d", got, last)
		}
		require.NoError(t, d.Stop(ctx))
	})
}

// TestDurableAppendDuringShutdown appends an event while a graceful
// Shutdown waits for a durable subscription's handler: its read refused by
// the stopping bus is the bus's stop, not a failed read of the store, so
// the Logger reports no failure, Err says ErrClosed and Stop returns nil,
// and the event, refused, is delivered by the next run, which the
// checkpoint saved at the stop leaves it to. Taken for a failed read, the
// refusal would be logged as an error and returned by Stop.
func TestDurableAppendDuringShutdown(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 1) // position 0
		var log bytes.Buffer
		b := newBus(t, &eventbus.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
		entered, release := make(chan struct{}), make(chan struct{})
		d := subscribeDurable(t, b, s, nil, "ledger", func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			if e.Position == 0 {
				close(entered)
				<-release
			}
			return nil
		}, nil)
		<-entered
		stopped := make(chan error)
		go func() { stopped <- b.Shutdown(ctx) }()
		synctest.Wait() // Shutdown waits for the handler
		refused := appendDeposits(t, s, reg, "b", 1).Position
		synctest.Wait() // the subscription has read it, and been refused
		close(release)
		require.NoError(t, <-stopped)

		if log.Len() > 0 {
			t.Errorf("Logger after a graceful Shutdown:\n%s", log.String())
		}
		if err := d.Err(); err != eventbus.ErrClosed {
			t.Errorf("Err() after Shutdown = %v, want ErrClosed", err)
		}
		if err := d.Stop(ctx); err != nil {
			t.Errorf("Stop() after Shutdown = %v, want nil", err)
		}
		if got := savedCheckpoint(t, s, "ledger"); got != int(refused) {
			t.Errorf("saved checkpoint = %d, want %d, the event refused", got, refused)
		}

		s = reopen()
		var handled []uint64
		d = subscribeDurable(t, newBus(t, nil), s, nil, "ledger", func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			handled = append(handled, e.Position)
			return nil
		}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Workers: 1}})
		require.NoError(t, d.WaitFor(ctx, refused))
		require.NoError(t, d.Stop(ctx))
		if diff := cmp.Diff([]uint64{refused}, handled); diff != "" {
			t.Errorf("positions handled by the next run (-want +got):\n%s", diff)
		}
	})
}

// TestDurableStopWhileRebuilding stops a durable subscription with a
// context that ends while its Rebuild's reset runs: Stop stops nothing,
// since the Rebuild goes on to start the subscription again, and its
// error says which subscription it could not stop and why, with ctx's
// error matchable, as Stop's other errors name theirs; it was ctx's error
// bare, "context canceled", naming none, to a caller stopping several.
func TestDurableStopWhileRebuilding(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "a", 1).Position
		d := subscribeDurable(t, newBus(t, nil), s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, nil)
		require.NoError(t, d.WaitFor(ctx, last))
		entered, release := make(chan struct{}), make(chan struct{})
		rebuilt := make(chan error)
		go func() {
			rebuilt <- d.Rebuild(ctx, func(context.Context) error {
				close(entered)
				<-release
				return nil
			})
		}()
		<-entered
		stopCtx, cancel := context.WithCancel(ctx)
		stopped := make(chan error)
		go func() { stopped <- d.Stop(stopCtx) }()
		synctest.Wait() // Stop waits for the Rebuild
		cancel()
		err := <-stopped
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), `"ledger"`) {
			t.Errorf("Stop() while Rebuild runs, ctx cancelled = %v, want an error naming \"ledger\" and wrapping context.Canceled", err)
		}
		close(release)
		require.NoError(t, <-rebuilt)
		require.NoError(t, d.Err(), "the Rebuild started the subscription again")
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))
	})
}

// brokenReadStore fails the reads of its subscriptions with errInjected
// after the first `after` events.
type brokenReadStore struct {
	eventbus.Store
	after int
}

func (s *brokenReadStore) Subscribe(ctx context.Context, o *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		n := 0
		for e, err := range s.Store.Subscribe(ctx, o) {
			if n++; n > s.after {
				yield(eventbus.RecordedEvent{}, errInjected)
				return
			}
			if !yield(e, err) {
				return
			}
		}
	}
}

// endingStore ends its subscriptions after the first `after` events
// without an error, which the Store contract forbids: a store's
// subscription ends only with one.
type endingStore struct {
	eventbus.Store
	after int
}

func (s *endingStore) Subscribe(ctx context.Context, o *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	return func(yield func(eventbus.RecordedEvent, error) bool) {
		n := 0
		for e, err := range s.Store.Subscribe(ctx, o) {
			if n++; n > s.after || !yield(e, err) {
				return
			}
		}
	}
}

// TestDurableStoreSubscriptionEnds runs a durable subscription over a store
// whose subscription ends without an error: the durable subscription has
// stopped reading the store, as when a read fails, so WaitFor for an event
// after the end returns at once, and Stop says why, rather than WaitFor
// waiting for its context and Stop returning nil, as if nothing were amiss.
func TestDurableStoreSubscriptionEnds(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		last := appendDeposits(t, s, reg, "a", 5).Position // positions 0-4
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, &endingStore{Store: s, after: 2}, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, nil)
		require.NoError(t, d.WaitFor(ctx, 1), "read before the end")
		if err := d.WaitFor(ctx, last); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("WaitFor(%d) after the store's subscription ended = %v, want an error that says so", last, err)
		}
		if err := d.Stop(context.Background()); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("Stop() = %v, want %v", err, eventbus.ErrInvalid)
		}
	})
}

// TestDurableWaitForNeverFinishes waits for events that a durable
// subscription will never finish: WaitFor returns at once instead of
// waiting for its context, with the store's error for an event after the
// failed read, and ErrClosed once the subscription has stopped, by Stop or
// by the bus's Close; after a failed read, a Stop leaves both reporting the
// store's error, the first reason. An event read before the failure still
// finishes.
func TestDurableWaitForNeverFinishes(t *testing.T) {
	for _, how := range []string{"store fails", "Stop", "Close"} {
		t.Run(how, func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				last := appendDeposits(t, s, reg, "a", 5).Position // positions 0-4
				store, want := s, eventbus.ErrClosed
				if how == "store fails" {
					store, want = &brokenReadStore{Store: s, after: 2}, errInjected
				}
				bus := newBus(t, nil)
				d := subscribeDurable(t, bus, store, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }, nil)
				if how == "store fails" {
					require.NoError(t, d.WaitFor(ctx, 1), "read before the failure")
				} else {
					require.NoError(t, d.WaitFor(ctx, last))
				}
				waited := make(chan error, 1)
				go func() { waited <- d.WaitFor(ctx, last+10) }()
				synctest.Wait()
				if how != "store fails" {
					require.NoError(t, d.Err(), "Err while the subscription reads the store")
				}
				switch how {
				case "Stop":
					require.NoError(t, d.Stop(context.Background()))
				case "Close":
					require.NoError(t, bus.Close())
				}
				if err := <-waited; !errors.Is(err, want) {
					t.Errorf("WaitFor(%d) waiting as the subscription stopped = %v, want %v", last+10, err, want)
				}
				if err := d.WaitFor(ctx, last+10); !errors.Is(err, want) {
					t.Errorf("WaitFor(%d) after the subscription stopped = %v, want %v", last+10, err, want)
				}
				if how == "store fails" {
					// The first position not read, right after the two read.
					if err := d.WaitFor(ctx, 2); !errors.Is(err, want) {
						t.Errorf("WaitFor(2) after the failed read = %v, want %v", err, want)
					}
				}
				if err := d.Err(); !errors.Is(err, want) {
					t.Errorf("Err() after the subscription stopped = %v, want %v", err, want)
				}
				if how == "store fails" {
					if err := d.Stop(context.Background()); !errors.Is(err, errInjected) {
						t.Errorf("Stop() = %v, want %v", err, errInjected)
					}
					// The first reason stays: the failed read, not the Stop.
					if err := d.Err(); !errors.Is(err, errInjected) {
						t.Errorf("Err() after the failed read and Stop = %v, want %v", err, errInjected)
					}
					if err := d.WaitFor(ctx, last+10); !errors.Is(err, errInjected) {
						t.Errorf("WaitFor(%d) after the failed read and Stop = %v, want %v", last+10, err, errInjected)
					}
				}
				require.NoError(t, d.WaitFor(ctx, 1), "finished before")
			})
		})
	}
}

// TestDurableWaitForDuringShutdown: a handler of projection A waits
// (WaitFor, with its handler context, as WaitFor's doc invites) for
// projection B's event. B's handler for it fails with ErrClosed because
// the bus began a graceful Shutdown (it publishes a follow-up), so the
// event is lost to the stop and will never finish; B's workers then exit.
// WaitFor's doc: "If the event will never finish, it returns at once: ...
// ErrClosed once the subscription has stopped (by ... the bus's Shutdown
// or Close)". It did not: B's pump sat in the store's Subscribe until the
// bus's context ended, which Shutdown did only once every subscription, A
// included, had drained; A waited for B, so Shutdown never returned.
func TestDurableWaitForDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		reg := newBankRegistry(t)
		bus := newBus(t, nil)
		followUps := newTopic[string](t, bus, "follow-ups", nil)

		started, release := make(chan struct{}), make(chan struct{})
		b := subscribeDurable(t, bus, s, nil, "b", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			close(started)
			<-release
			if err := followUps.Publish(ctx, "done"); err != nil {
				return fmt.Errorf("follow-up: %w", err)
			}
			return nil
		}, &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "b"}})
		posB := appendDeposits(t, s, reg, "b", 1).Position
		<-started

		waited := make(chan error, 1)
		subscribeDurable(t, bus, s, nil, "a", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			err := b.WaitFor(ctx, posB)
			waited <- err
			return err
		}, &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "a"}})
		appendDeposits(t, s, reg, "a", 1)
		synctest.Wait() // A waits for B, B's handler for release

		shutdownCtx, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- bus.Shutdown(shutdownCtx) }()
		synctest.Wait()
		close(release) // B's follow-up is refused: its event is lost to the stop
		synctest.Wait()

		select {
		case err := <-waited:
			if !errors.Is(err, eventbus.ErrClosed) {
				t.Errorf("A's WaitFor = %v, want ErrClosed", err)
			}
		default:
			t.Errorf("A's WaitFor for B's event, lost to the stop, still waits once B's workers have exited (B.Err() = %v)", b.Err())
		}
		select {
		case err := <-done:
			t.Logf("Shutdown = %v", err)
		default:
			t.Errorf("Shutdown still waits for A, which waits for B")
			cancel()
			t.Logf("Shutdown after its deadline = %v", <-done)
		}
	})
}

// TestDurableWaitForUnreadDuringShutdown is TestDurableWaitForDuringShutdown
// with a position that B has not read, past the store's end, which B's
// filter would skip: WaitFor waits for it while B runs, and returns
// ErrClosed once B has stopped. During a graceful Shutdown B's workers
// have exited and no event will ever be read again, yet A's handler
// waited on, and Shutdown with it.
func TestDurableWaitForUnreadDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s, err := eventbus.NewMemoryStore(nil)
		require.NoError(t, err)
		reg := newBankRegistry(t)
		bus := newBus(t, nil)
		b := subscribeDurable(t, bus, s, nil, "b", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			return nil
		}, &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "b"}})
		synctest.Wait() // B has caught up
		unread := appendDeposits(t, s, reg, "other", 1).Position + 10

		waited := make(chan error, 1)
		subscribeDurable(t, bus, s, nil, "a", func(ctx context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			err := b.WaitFor(ctx, unread)
			waited <- err
			return err
		}, &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "a"}})
		appendDeposits(t, s, reg, "a", 1)
		synctest.Wait() // A waits for B

		shutdownCtx, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- bus.Shutdown(shutdownCtx) }()
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Shutdown = %v, want nil", err)
			}
			if err := <-waited; !errors.Is(err, eventbus.ErrClosed) {
				t.Errorf("A's WaitFor = %v, want ErrClosed", err)
			}
		default:
			t.Errorf("Shutdown still waits for A, whose handler waits for B's WaitFor, though B's workers have exited (B.Err() = %v)", b.Err())
			cancel()
			t.Logf("Shutdown after its deadline = %v; A's WaitFor = %v", <-done, <-waited)
		}
	})
}

// TestDurableWaitForSkipped waits for positions that a durable
// subscription, caught up with the store, passes without handling them:
// events of another stream and of another type than its filter's, and of
// a system stream. WaitFor returns once the subscription has read past
// them, as for an event that it handles; it waited for the next event
// that the subscription selected, or for its context. An event of a
// stream soft-deleted since is handled as any other.
func TestDurableWaitForSkipped(t *testing.T) {
	tests := []struct {
		name   string
		commit func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) uint64 // returns the position to wait for
	}{
		{"another stream", func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) uint64 {
			return appendDeposits(t, s, reg, "other", 1).Position
		}},
		{"another type", func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) uint64 {
			e, err := reg.Encode(Withdrawn{Amount: 1})
			require.NoError(t, err)
			res, err := s.Append(context.Background(), "b-1", eventbus.Any, e)
			require.NoError(t, err)
			return res.Position
		}},
		{"a system stream", func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) uint64 {
			return appendDeposits(t, s, reg, "$b", 1).Position
		}},
		{"a deleted stream", func(t *testing.T, s eventbus.Store, reg *eventbus.Registry) uint64 {
			pos := appendDeposits(t, s, reg, "b-2", 1).Position
			require.NoError(t, s.Delete(context.Background(), "b-2", eventbus.Any))
			return pos
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				appendDeposits(t, s, reg, "b-0", 2)
				bus := newBus(t, nil)
				d := subscribeDurable(t, bus, s, reg, "b", func(context.Context, eventbus.Event[Deposited]) error { return nil },
					&eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "b"}})
				synctest.Wait() // caught up
				pos := tt.commit(t, s, reg)
				waited := make(chan error, 1)
				go func() { waited <- d.WaitFor(ctx, pos) }()
				synctest.Wait()
				select {
				case err := <-waited:
					if err != nil {
						t.Errorf("WaitFor(%d) = %v, want nil", pos, err)
					}
				default:
					t.Errorf("WaitFor(%d) still waits though the subscription has read past it (checkpoint %d)", pos, d.Checkpoint())
					cancel()
					<-waited
				}
			})
		})
	}
}

// TestDurableWaitForAbandoned stops a durable subscription without grace
// while its one event waits for a retry, by Stop with a context that is
// done and by the bus's Close: the event, read but abandoned, will never
// finish in this run, so WaitFor for it returns ErrClosed at once, as its
// doc says, rather than waiting for its context.
func TestDurableWaitForAbandoned(t *testing.T) {
	for _, how := range []string{"Stop", "Close"} {
		t.Run(how, func(t *testing.T) {
			eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
				pos := appendDeposits(t, s, reg, "a", 1).Position
				bus := newBus(t, nil)
				d := subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
					return errors.New("not now")
				}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{
					Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour, MaxDelay: time.Hour},
				}})
				synctest.Wait() // the event waits for its retry
				done, cancel := context.WithCancel(context.Background())
				cancel()
				switch how {
				case "Stop":
					require.Error(t, d.Stop(done), "Stop abandons the event")
				case "Close":
					require.Error(t, bus.Close(), "Close abandons the event")
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				start := time.Now()
				if err := d.WaitFor(ctx, pos); !errors.Is(err, eventbus.ErrClosed) || time.Since(start) != 0 {
					t.Errorf("WaitFor(%d) of an abandoned event = %v after %v, want %v at once", pos, err, time.Since(start), eventbus.ErrClosed)
				}
			})
		})
	}
}

// TestDurableSkipsOthersStreams runs two durable subscriptions that select
// every system stream, saving their checkpoints after each event, with the
// Idempotency middleware over the store: neither handles the other's
// checkpoints and processed records, which they would hand back and forth
// for ever, each record handled making another; each handles the audit
// events alone.
func TestDurableSkipsOthersStreams(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
		ctx := context.Background()
		var want []string
		var last uint64
		for range 3 {
			res, err := s.Append(ctx, "$audit", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "audited"})
			require.NoError(t, err)
			want = append(want, "$audit/"+strconv.FormatUint(res.Revision, 10))
			last = res.Position
		}
		bus := newBus(t, nil)
		var mu sync.Mutex
		got := map[string][]string{}
		var subs []*eventbus.Durable
		for _, name := range []string{"auditor", "archiver"} {
			h := func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
				mu.Lock()
				defer mu.Unlock()
				got[name] = append(got[name], e.Payload.Stream+"/"+strconv.FormatUint(e.Payload.Revision, 10))
				return nil
			}
			opts := &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "$"}, CheckpointEvery: 1}
			opts.Subscription.Middleware = []eventbus.Middleware{eventbus.Idempotency(&eventbus.IdempotencyOptions{Store: eventbus.NewStoreProcessed(s)})}
			subs = append(subs, subscribeDurable(t, bus, s, nil, name, h, opts))
		}
		for _, d := range subs {
			require.NoError(t, d.WaitFor(ctx, last))
		}
		for _, d := range subs {
			require.NoError(t, d.Stop(ctx))
		}
		mu.Lock()
		defer mu.Unlock()
		for _, name := range []string{"auditor", "archiver"} {
			if diff := cmp.Diff(want, got[name]); diff != "" {
				t.Errorf("events handled by %s (-want +got):\n%s", name, diff)
			}
		}
	})
}

// TestDurableFilterChange resumes a durable subscription with a wider
// filter than its last run's: the checkpoint is a position in the store,
// so the new filter applies from there on, and the events before it that
// only the new filter selects are not handled; Rebuild handles them.
func TestDurableFilterChange(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 2) // positions 0-1
		appendDeposits(t, s, reg, "b", 2) // positions 2-3
		var mu sync.Mutex
		var got []string
		h := func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.Payload.Stream+"/"+strconv.FormatUint(e.Payload.Revision, 10))
			return nil
		}
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, nil, "ledger", h, &eventbus.DurableOptions{Filter: eventbus.Filter{StreamPrefix: "a"}})
		require.NoError(t, d.WaitFor(ctx, 1))
		last := appendDeposits(t, s, reg, "a", 1).Position // position 4: the checkpoint passes b's events
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))

		more := appendDeposits(t, s, reg, "b", 1).Position
		d = subscribeDurable(t, bus, s, nil, "ledger", h, nil) // every stream
		require.NoError(t, d.WaitFor(ctx, more))
		check := func(when string, want []string) {
			t.Helper()
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("events handled %s (-want +got):\n%s", when, diff)
			}
			got = nil
		}
		check("before the rebuild", []string{"a/0", "a/1", "a/2", "b/2"})
		require.NoError(t, d.Rebuild(ctx, nil))
		require.NoError(t, d.WaitFor(ctx, more))
		require.NoError(t, d.Stop(ctx))
		mu.Lock()
		slices.Sort(got)
		mu.Unlock()
		check("by the rebuild", []string{"a/0", "a/1", "a/2", "b/0", "b/1", "b/2"})
	})
}

// TestDurableStopDuringShutdown stops a durable subscription while the
// bus shuts down with grace, waiting for an event whose retry is an hour
// away: Stop returns when its own context ends, as it does while the bus
// runs, and reports the event undelivered, not handled; the checkpoint
// stays before it, and the bus's Shutdown leaves it to Stop to report.
func TestDurableStopDuringShutdown(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		d := subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			return errors.New("not now")
		}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{
			Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour, MaxDelay: time.Hour},
		}})
		synctest.Wait() // the event waits for its retry
		shutdown := make(chan error, 1)
		go func() { shutdown <- bus.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown waits for the retry

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err := d.Stop(ctx)
		if waited := time.Since(start); waited != time.Second {
			t.Errorf("Stop() with a second's context during Shutdown returned after %v, want %v", waited, time.Second)
		}
		var undelivered *eventbus.UndeliveredError
		if !errors.As(err, &undelivered) || undelivered.Count != 1 {
			t.Errorf("Stop() = %v, want an *UndeliveredError for 1 event", err)
		}
		require.NoError(t, <-shutdown)
		if got := savedCheckpoint(t, s, "ledger"); got > 0 {
			t.Errorf("saved checkpoint = %d, want none or 0: the event was not handled", got)
		}
	})
}

// TestDurableStopWithDoneContext stops a durable subscription with a
// context that is done already, as Bus.Close is a Shutdown with one: Stop
// stops it without grace every time, reporting the event that waits for
// its retry as undelivered, rather than returning the context's error
// without stopping it, as it did about half the time. Each run delivers
// the event again.
func TestDurableStopWithDoneContext(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		done, cancel := context.WithCancel(context.Background())
		cancel()
		for run := range 20 {
			attempts := 0
			d := subscribeDurable(t, bus, s, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
				attempts++
				return errors.New("not now")
			}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{
				Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour, MaxDelay: time.Hour},
			}})
			synctest.Wait() // the event waits for its retry
			require.Equal(t, 1, attempts, "run %d: attempts before Stop", run)
			var undelivered *eventbus.UndeliveredError
			if err := d.Stop(done); !errors.As(err, &undelivered) || undelivered.Count != 1 {
				t.Fatalf("run %d: Stop(done context) = %v, want an *UndeliveredError for 1 event", run, err)
			}
			if err := d.Stop(context.Background()); !errors.Is(err, eventbus.ErrClosed) {
				t.Fatalf("run %d: Stop() after Stop(done context) = %v, want %v", run, err, eventbus.ErrClosed)
			}
		}
	})
}

// TestDurableStopUndeliveredNamesItself stops two durable subscriptions,
// each with an event waiting for its retry, with a context that is done,
// as an application stopping its projections at exit does, joining the
// errors: each Stop's *UndeliveredError names its subscription, as its
// other errors (a failed read, a failed save) do, so that the joined error
// says which subscription left which events for its next run.
func TestDurableStopUndeliveredNamesItself(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		appendDeposits(t, s, reg, "a", 1)
		bus := newBus(t, nil)
		opts := &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{
			Retry: &eventbus.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Hour},
		}}
		h := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return errors.New("not now") }
		balances := subscribeDurable(t, bus, s, nil, "balances", h, opts)
		mailer := subscribeDurable(t, bus, s, nil, "mailer", h, opts)
		synctest.Wait() // each event waits for its retry
		done, cancel := context.WithCancel(context.Background())
		cancel()
		for _, d := range []*eventbus.Durable{balances, mailer} {
			err := d.Stop(done)
			var undelivered *eventbus.UndeliveredError
			if !errors.As(err, &undelivered) || undelivered.Count != 1 {
				t.Errorf("Stop(done context) of %s = %v, want an *UndeliveredError for 1 event", d.Name(), err)
			}
			if err == nil || !strings.Contains(err.Error(), strconv.Quote(d.Name())) {
				t.Errorf("Stop(done context) of %s = %v, want an error naming %q", d.Name(), err, d.Name())
			}
		}
	})
}

// TestDurableRebuildResetNamesItself checks that Rebuild's error for a
// failed reset names the durable subscription and wraps reset's error, as
// Stop's errors and Rebuild's other errors name theirs: it returned reset's
// error bare, so an application rebuilding several projections at once
// could not tell whose read model had failed to empty, and which stayed
// stopped.
func TestDurableRebuildResetNamesItself(t *testing.T) {
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	bus := newBus(t, nil)
	h := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
	for _, name := range []string{"balances", "mailer"} {
		d := subscribeDurable(t, bus, store, nil, name, h, nil)
		err := d.Rebuild(context.Background(), func(context.Context) error { return errInjected })
		if !errors.Is(err, errInjected) || err == nil || !strings.Contains(err.Error(), strconv.Quote(name)) {
			t.Errorf("Rebuild(failing reset) of %s = %v, want an error wrapping %v naming %q", name, err, errInjected, name)
		}
		if err := d.Err(); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("Err() after a failed reset of %s = %v, want %v: it stays stopped", name, err, eventbus.ErrClosed)
		}
	}
}

// checkpointFailStore fails every save of a durable subscription's
// checkpoint with errInjected.
type checkpointFailStore struct{ eventbus.Store }

func (s checkpointFailStore) Append(ctx context.Context, stream string, expected eventbus.ExpectedRevision, events ...eventbus.EventData) (eventbus.AppendResult, error) {
	if strings.HasPrefix(stream, "$checkpoint-") {
		return eventbus.AppendResult{}, errInjected
	}
	return s.Store.Append(ctx, stream, expected, events...)
}

// TestDurableFinalSaveFailureLogged shuts down the bus of a durable
// subscription whose store fails to save its checkpoint: no Stop may
// follow to return that error, so Shutdown returns it, and the bus's
// logger hears of it, as it does of the saves before.
func TestDurableFinalSaveFailureLogged(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "a", 3).Position
		var log bytes.Buffer
		bus := newBus(t, &eventbus.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
		d := subscribeDurable(t, bus, checkpointFailStore{s}, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			return nil
		}, &eventbus.DurableOptions{CheckpointEvery: 1000}) // no save before the final one
		require.NoError(t, d.WaitFor(ctx, last))
		require.ErrorIs(t, bus.Shutdown(ctx), errInjected)
		if got := log.String(); !strings.Contains(got, "saving a checkpoint failed") || !strings.Contains(got, errInjected.Error()) {
			t.Errorf("log after Shutdown = %q, want the failed save of the checkpoint, with %q", got, errInjected)
		}
		if err := d.Stop(ctx); !errors.Is(err, errInjected) {
			t.Errorf("Stop() after Shutdown = %v, want %v", err, errInjected)
		}
	})
}

// TestDurableOldVersionRefused subscribes durably with the Go type of an old
// schema version of an event type: events reach handlers upcast to the
// latest version, which that type cannot hold, so SubscribeDurable refuses
// it rather than dead-letter every event. The latest version's type and an
// interface are taken.
func TestDurableOldVersionRefused(t *testing.T) {
	ctx := context.Background()
	reg := newUserRegistry(t, nil)
	bus := newBus(t, nil)
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	if _, err := eventbus.SubscribeDurable(ctx, bus, s, reg, "v1", func(context.Context, eventbus.Event[userV1]) error { return nil }, nil); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("SubscribeDurable[userV1] = %v, want %v", err, eventbus.ErrInvalid)
	}
	subscribeDurable(t, bus, s, reg, "v3", func(context.Context, eventbus.Event[userV3]) error { return nil }, nil)
	subscribeDurable(t, bus, s, reg, "any", func(context.Context, eventbus.Event[any]) error { return nil }, nil)
}

// TestDurableUnregisteredTypeRefused subscribes durably with a handler of
// a concrete Go type not registered, a pointer to the registered type of
// the events: no event decodes to it, so each would go to the dead-letter
// queue. SubscribeDurable refuses it with an error wrapping
// ErrUnknownEvent, and starts nothing.
func TestDurableUnregisteredTypeRefused(t *testing.T) {
	ctx := context.Background()
	reg := newUserRegistry(t, nil)
	bus := newBus(t, nil)
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	defer s.Close()
	h := func(context.Context, eventbus.Event[*userV3]) error { return nil }
	if _, err := eventbus.SubscribeDurable(ctx, bus, s, reg, "users", h, nil); !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Errorf("SubscribeDurable[*userV3], not registered = %v, want %v", err, eventbus.ErrUnknownEvent)
	}
}

// TestSubscribeDurableAfterShutdown subscribes again, after the bus's
// Shutdown, with the name of a durable subscription that the Shutdown
// stopped: SubscribeDurable returns ErrClosed, as it does for a new name,
// not ErrDuplicate, which says that the name is taken by one that runs.
func TestSubscribeDurableAfterShutdown(t *testing.T) {
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newBankRegistry(t)
	ctx := context.Background()
	bus := newBus(t, nil)
	h := func(context.Context, eventbus.Event[Deposited]) error { return nil }
	subscribeDurable(t, bus, s, reg, "ledger", h, nil)
	require.NoError(t, bus.Shutdown(ctx))
	for _, name := range []string{"ledger", "other"} {
		_, err := eventbus.SubscribeDurable(ctx, bus, s, reg, name, h, nil)
		if !errors.Is(err, eventbus.ErrClosed) || errors.Is(err, eventbus.ErrDuplicate) {
			t.Errorf("SubscribeDurable(%q) after Shutdown = %v, want ErrClosed", name, err)
		}
	}
}

// failingOnceStore fails the first of its subscriptions with errInjected
// after the first `after` events, as brokenReadStore does; the others read
// the store.
type failingOnceStore struct {
	eventbus.Store
	after  int
	failed atomic.Bool
}

func (s *failingOnceStore) Subscribe(ctx context.Context, o *eventbus.SubscribeOptions) iter.Seq2[eventbus.RecordedEvent, error] {
	if s.failed.Swap(true) {
		return s.Store.Subscribe(ctx, o)
	}
	return (&brokenReadStore{Store: s.Store, after: s.after}).Subscribe(ctx, o)
}

// TestDurableRebuildAfterReadFailure rebuilds a durable subscription that
// stopped reading the store when a read failed, as Err's doc says it may:
// the rebuild reads the store again from the first event and handles
// every one, rather than returning the old run's error and staying
// stopped for good.
func TestDurableRebuildAfterReadFailure(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		last := appendDeposits(t, s, reg, "a", 5).Position // positions 0-4
		bus := newBus(t, nil)
		var handled atomic.Int32
		d := subscribeDurable(t, bus, &failingOnceStore{Store: s, after: 2}, nil, "ledger", func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			handled.Add(1)
			return nil
		}, nil)
		require.NoError(t, d.WaitFor(ctx, 1), "read before the failure")
		require.ErrorIs(t, d.WaitFor(ctx, last), errInjected, "WaitFor after the failure")
		err := d.Rebuild(ctx, func(context.Context) error {
			handled.Store(0)
			return nil
		})
		if err != nil {
			t.Fatalf("Rebuild() after a failed read = %v, want nil", err)
		}
		if err := d.Err(); err != nil {
			t.Errorf("Err() after Rebuild = %v, want nil", err)
		}
		require.NoError(t, d.WaitFor(ctx, last))
		if got := handled.Load(); got != 5 {
			t.Errorf("handled %d events after Rebuild, want 5", got)
		}
		require.NoError(t, d.Stop(ctx))
	})
}

// TestDurableUserCodePanics makes the user code that Rebuild and
// SubscribeDurable call panic, a reset and a middleware's constructor, and
// recovers the panic, as a server recovering its handlers does: the panic
// reaches the caller, and the subscription is left stopped, as after an
// error, rather than stopped while Err says that it reads the store,
// WaitFor waits for good, and its name stays taken on the bus.
func TestDurableUserCodePanics(t *testing.T) {
	recovered := func(f func()) (r any) {
		defer func() { r = recover() }()
		f()
		return nil
	}
	panicking := eventbus.Middleware(func(eventbus.EnvelopeHandler) eventbus.EnvelopeHandler { panic("constructor") })
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		last := appendDeposits(t, s, reg, "a", 3).Position
		bus := newBus(t, nil)
		var handled atomic.Int32
		h := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error {
			handled.Add(1)
			return nil
		}
		r := recovered(func() {
			_, _ = eventbus.SubscribeDurable(ctx, bus, s, nil, "ledger", h, &eventbus.DurableOptions{
				Subscription: eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{panicking}},
			})
		})
		require.Equal(t, "constructor", r, "SubscribeDurable's panic")
		d := subscribeDurable(t, bus, s, nil, "ledger", h, nil)
		require.NoError(t, d.WaitFor(ctx, last))

		r = recovered(func() {
			_ = d.Rebuild(ctx, func(context.Context) error { panic("reset") })
		})
		require.Equal(t, "reset", r, "Rebuild's panic")
		if err := d.Err(); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("Err() after a reset that panicked = %v, want %v", err, eventbus.ErrClosed)
		}
		if err := d.WaitFor(ctx, last); !errors.Is(err, eventbus.ErrClosed) {
			t.Errorf("WaitFor(%d) after a reset that panicked = %v, want %v", last, err, eventbus.ErrClosed)
		}
		handled.Store(0)
		d, err := eventbus.SubscribeDurable(ctx, bus, s, nil, "ledger", h, nil)
		require.NoError(t, err, "SubscribeDurable after a reset that panicked")
		require.NoError(t, d.WaitFor(ctx, last))
		if got := handled.Load(); got != 3 {
			t.Errorf("handled %d events after the rebuild's checkpoint, want 3", got)
		}
		require.NoError(t, d.Stop(ctx))
	})
}

// A durable subscription whose handler publishes a follow-up event to a bus
// topic, stopped gracefully while it handles an event: the publish fails
// with ErrClosed, since the bus takes no more events, through every retry.
// That failure is the stop's, not the event's: the checkpoint stays before
// the event, as for the events a stop without grace abandons, so that the
// next run handles it again and the follow-up is published then.
func TestDurableShutdownFailsFollowUp(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "a", 1)
		run := func(s eventbus.Store, entered, release chan struct{}) (*eventbus.Bus, *eventbus.Durable, *[]eventbus.Event[Order]) {
			b := newBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 2}})
			follow := newTopic[Order](t, b, "follow", nil)
			var mu sync.Mutex
			var got []eventbus.Event[Order]
			subscribe(t, follow, "rec", func(_ context.Context, e eventbus.Event[Order]) error {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, e)
				return nil
			}, nil)
			d := subscribeDurable(t, b, s, reg, "notify", func(ctx context.Context, e eventbus.Event[Deposited]) error {
				if entered != nil {
					close(entered)
					entered = nil
					<-release
				}
				return follow.Publish(ctx, Order{Key: e.Key})
			}, nil)
			return b, d, &got
		}
		entered, release := make(chan struct{}), make(chan struct{})
		b, d, _ := run(s, entered, release)
		shutdownWhileHeld(t, b, entered, release)
		var dead []eventbus.DeadLetter
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			dead = append(dead, dl)
		}
		require.Len(t, dead, 1)
		require.ErrorIs(t, dead[0].Err, eventbus.ErrClosed)
		require.Equal(t, uint64(0), d.Checkpoint(), "checkpoint past an event whose handler the stop failed")

		s = reopen()
		b, d, got := run(s, nil, nil)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, b.Flush(ctx))
		require.Len(t, *got, 1, "follow-up events after the restart")
	})
}

// TestDurablePanicWithBrokenErrorWhileStopping has a durable handler panic,
// once the bus has begun a graceful Shutdown, with an error whose Unwrap
// panics: the check of whether the stop refused the handler's publishes
// (an error matching ErrClosed) walks that error outside any recover, and
// ended the process. Such an error is now not the stop's refusal: the event
// is dead-lettered with the value it panicked with, and finished.
func TestDurablePanicWithBrokenErrorWhileStopping(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		appendDeposits(t, s, reg, "a", 1)
		b := newBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 1}})
		entered, release := make(chan struct{}), make(chan struct{})
		d := subscribeDurable(t, b, s, reg, "notify", func(context.Context, eventbus.Event[Deposited]) error {
			close(entered)
			<-release
			panic(brokenError{})
		}, nil)
		shutdownWhileHeld(t, b, entered, release)
		var dead []any
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			pe, ok := dl.Err.(*eventbus.PanicError)
			require.True(t, ok, "dead letter's error %v, want a *PanicError", dl.Err)
			dead = append(dead, pe.Value)
		}
		require.Equal(t, []any{brokenError{}}, dead)
		require.Equal(t, uint64(1), d.Checkpoint(), "the dead letter is finished")
	})
}

// TestDurableErrClosedWhileRunning has a durable handler fail with an
// error matching ErrClosed while its bus runs: it publishes to another bus,
// closed already. Only a stop of its own bus makes such a failure the
// stop's (TestDurableShutdownFailsFollowUp): here the event is retried as
// the policy says and dead-lettered, and the checkpoint passes it, as for
// any other error, so that WaitFor returns and later events are waited for
// no longer than their own handling; Flush reports nothing unhandled.
func TestDurableErrClosedWhileRunning(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "a", 1)
		other := newBus(t, nil)
		elsewhere := newTopic[Order](t, other, "elsewhere", nil)
		require.NoError(t, other.Close())
		b := newBus(t, &eventbus.Options{Retry: eventbus.RetryPolicy{MaxAttempts: 3}})
		var attempts atomic.Int64
		d := subscribeDurable(t, b, s, reg, "notify", func(ctx context.Context, e eventbus.Event[Deposited]) error {
			attempts.Add(1)
			return elsewhere.Publish(ctx, Order{Key: e.Key})
		}, nil)
		wait, cancel := context.WithTimeout(ctx, time.Hour)
		defer cancel()
		require.NoError(t, d.WaitFor(wait, last.Position), "WaitFor of an event dead-lettered while the bus runs")
		require.EqualValues(t, 3, attempts.Load(), "attempts at an event failed with another bus's ErrClosed")
		require.Equal(t, last.Position+1, d.Checkpoint(), "the dead letter is finished")
		require.NoError(t, b.Flush(ctx), "Flush after a dead letter of a running bus")
	})
}

// shutdownWhileHeld shuts b down gracefully while a handler, once it has
// closed entered, waits for release: it closes release once Shutdown
// waits for that handler, and wants Shutdown to return nil.
func shutdownWhileHeld(t *testing.T, b *eventbus.Bus, entered <-chan struct{}, release chan struct{}) {
	t.Helper()
	<-entered
	stopped := make(chan error)
	go func() { stopped <- b.Shutdown(context.Background()) }()
	synctest.Wait() // Shutdown waits for the handler
	close(release)
	require.NoError(t, <-stopped)
}

// TestDurableEnvelopeNamesStoredType checks that what a durable
// subscription's middleware and dead-letter queue see of an event names
// its stored type and schema version, as its handler's header does: the
// Logging middleware logs "the event's type", and a sink files dead letters
// by it. They named the subscription's internal topic ("durable." and the
// name) as the type of every event, and schema version 1 whatever was
// stored.
func TestDurableEnvelopeNamesStoredType(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
		ctx := context.Background()
		reg := newUserRegistry(t, nil)
		bus := newBus(t, nil)
		var logged bytes.Buffer
		type seen struct {
			Type    string
			Version int
		}
		var mu sync.Mutex
		var envs []seen
		spy := func(next eventbus.EnvelopeHandler) eventbus.EnvelopeHandler {
			return func(ctx context.Context, env *eventbus.Envelope) error {
				mu.Lock()
				envs = append(envs, seen{env.Type, env.SchemaVersion})
				mu.Unlock()
				return next(ctx, env)
			}
		}
		users := newStoreTopic[userV3](t, bus, s, reg, "users")
		d, err := users.Subscribe(ctx, "crm", func(context.Context, eventbus.Event[userV3]) error {
			return eventbus.Permanent(errors.New("crm down"))
		}, &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Middleware: []eventbus.Middleware{
			eventbus.Logging(slog.New(slog.NewTextHandler(&logged, nil))), spy,
		}}})
		require.NoError(t, err)
		res, err := users.Publish(ctx, userV3{First: "Ada", Last: "Lovelace"})
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, res.Position))
		require.NoError(t, bus.Flush(ctx))

		want := seen{"user.created", 3} // as stored, as env.Payload() holds it
		mu.Lock()
		if diff := cmp.Diff([]seen{want}, envs); diff != "" {
			t.Errorf("Envelope's Type and SchemaVersion in the middleware (-want +got):\n%s", diff)
		}
		mu.Unlock()
		require.Equal(t, 1, bus.DeadLetters().Len())
		for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			if got := (seen{dl.Type, dl.SchemaVersion}); got != want {
				t.Errorf("dead letter's Type and SchemaVersion = %+v, want %+v", got, want)
			}
		}
		if !strings.Contains(logged.String(), "type=user.created") {
			t.Errorf("Logging logged %q, want the event's type=user.created", logged.String())
		}
	})
}

// TestDurableStoppedNamesItself checks that Stop and Rebuild of a durable
// subscription that has stopped, by a Stop or the bus's Shutdown, return an
// error that wraps ErrClosed and names the subscription, as their other
// errors do: they returned ErrClosed bare, so an application stopping or
// rebuilding several projections could not tell which had stopped already.
func TestDurableStoppedNamesItself(t *testing.T) {
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	ctx := context.Background()
	h := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
	check := func(call, name string, err error) {
		t.Helper()
		if !errors.Is(err, eventbus.ErrClosed) || !strings.Contains(err.Error(), strconv.Quote(name)) {
			t.Errorf("%s of %s = %v, want an error wrapping %v naming %q", call, name, err, eventbus.ErrClosed, name)
		}
	}
	bus := newBus(t, nil)
	for _, name := range []string{"balances", "mailer"} {
		d := subscribeDurable(t, bus, store, nil, name, h, nil)
		require.NoError(t, d.Stop(ctx))
		check("Stop() after Stop", name, d.Stop(ctx))
		check("Rebuild() after Stop", name, d.Rebuild(ctx, nil))
	}
	reg := newBankRegistry(t)
	last := appendDeposits(t, store, reg, "a", 1).Position
	bus = newBus(t, nil)
	balances := subscribeDurable(t, bus, store, nil, "balances", h, nil)
	mailer := subscribeDurable(t, bus, store, nil, "mailer", h, nil)
	for _, d := range []*eventbus.Durable{balances, mailer} {
		require.NoError(t, d.WaitFor(ctx, last))
	}
	require.NoError(t, bus.Shutdown(ctx))
	for _, d := range []*eventbus.Durable{balances, mailer} {
		check("Rebuild() after Shutdown", d.Name(), d.Rebuild(ctx, nil))
		// Refused before it saves the checkpoint at 0: the next run
		// resumes, rather than handling every event again.
		if got := savedCheckpoint(t, store, d.Name()); got != int(last)+1 {
			t.Errorf("saved checkpoint of %s after Rebuild() after Shutdown = %d, want %d", d.Name(), got, last+1)
		}
	}
}

// A checkpoint that is not a number is bad input: SubscribeDurable returns
// an error wrapping ErrInvalid rather than start over from the first event
// or guess, and leaves the name free, so that once a good checkpoint is
// saved, the next try resumes from it.
func TestDurableCheckpointCorrupt(t *testing.T) {
	eachBackend(t, false, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		last := appendDeposits(t, s, reg, "a", 5).Position // positions 0-4
		checkpoint := func(data string) {
			t.Helper()
			_, err := s.Append(ctx, "$checkpoint-ledger", eventbus.Any, eventbus.EventData{ID: eventbus.NewID(), Type: "eventbus.checkpoint", Data: []byte(data)})
			require.NoError(t, err)
		}
		checkpoint("three")
		bus := newBus(t, nil)
		var rec positions
		h := rec.handle
		if _, err := eventbus.SubscribeDurable(ctx, bus, s, reg, "ledger", h, nil); !errors.Is(err, eventbus.ErrInvalid) {
			t.Fatalf("SubscribeDurable() with a checkpoint %q = %v, want %v", "three", err, eventbus.ErrInvalid)
		}

		checkpoint("3")
		d := subscribeDurable(t, bus, s, reg, "ledger", h, nil)
		require.NoError(t, d.WaitFor(ctx, last))
		require.NoError(t, d.Stop(ctx))
		if diff := cmp.Diff([]uint64{3, 4}, rec.take()); diff != "" {
			t.Errorf("positions handled after the good checkpoint 3 (-want +got):\n%s", diff)
		}
	})
}

// positions records the positions of the deposits that a durable
// subscription's handler, rec.handle, is given, on any goroutine.
type positions struct {
	mu  sync.Mutex
	got []uint64
}

func (p *positions) handle(_ context.Context, e eventbus.Event[Deposited]) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, e.Position)
	return nil
}

// take returns the positions recorded since the last take.
func (p *positions) take() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.got
	p.got = nil
	return out
}

// TestDurableFrom starts durable subscriptions with no saved checkpoint at
// the store's end and at a position: each handles the events from there
// on, its start is saved before it handles anything (a crash before its
// first save must not make the next run start at a later end), and a run
// that finds a checkpoint saved resumes from it whatever From says, so the
// events appended while it was stopped are handled.
func TestDurableFrom(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 3) // positions 0-2
		var mu sync.Mutex
		handled := map[string][]uint64{}
		handler := func(name string) eventbus.Handler[eventbus.RecordedEvent] {
			return func(_ context.Context, e eventbus.Event[eventbus.RecordedEvent]) error {
				mu.Lock()
				defer mu.Unlock()
				handled[name] = append(handled[name], e.Position)
				return nil
			}
		}
		bus := newBus(t, nil)
		manager := subscribeDurable(t, bus, s, nil, "manager", handler("manager"), &eventbus.DurableOptions{From: eventbus.End})
		late := subscribeDurable(t, bus, s, nil, "late", handler("late"), &eventbus.DurableOptions{From: 1})
		require.Equal(t, 3, savedCheckpoint(t, s, "manager"), "the start saved by SubscribeDurable")
		require.Equal(t, 1, savedCheckpoint(t, s, "late"), "the start saved by SubscribeDurable")

		res := appendDeposits(t, s, reg, "b", 1)
		require.NoError(t, manager.WaitFor(ctx, res.Position))
		require.NoError(t, late.WaitFor(ctx, res.Position))
		require.NoError(t, manager.Stop(ctx))
		stopped := appendDeposits(t, s, reg, "b", 1) // while manager is stopped
		manager = subscribeDurable(t, bus, s, nil, "manager", handler("manager"), &eventbus.DurableOptions{From: eventbus.End})
		require.NoError(t, manager.WaitFor(ctx, stopped.Position))
		require.NoError(t, late.WaitFor(ctx, stopped.Position))

		mu.Lock()
		defer mu.Unlock()
		for _, positions := range handled {
			slices.Sort(positions) // streams a and b: two keys, whose order no worker keeps
		}
		want := map[string][]uint64{"manager": {res.Position, stopped.Position}, "late": {1, 2, res.Position, stopped.Position}}
		if diff := cmp.Diff(want, handled); diff != "" {
			t.Errorf("positions handled (-want +got):\n%s", diff)
		}
	})
}

// TestDurableFromPastEnd starts a durable subscription with no saved
// checkpoint from a position past the store's end: SubscribeDurable
// refuses it and saves nothing, where it used to wait for that position
// while the events appended up to it went by, never handled. The store's
// end counts its system streams too: a From at the position after the
// last checkpoint is taken.
func TestDurableFromPastEnd(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		appendDeposits(t, s, reg, "a", 3) // positions 0-2
		bus := newBus(t, nil)
		h := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
		first := subscribeDurable(t, bus, s, nil, "first", h, &eventbus.DurableOptions{From: eventbus.End}) // its checkpoint at position 3
		require.NoError(t, first.Stop(ctx))

		d, err := eventbus.SubscribeDurable(ctx, bus, s, nil, "past", h, &eventbus.DurableOptions{From: 5})
		if !errors.Is(err, eventbus.ErrInvalid) {
			if d != nil {
				require.NoError(t, d.Stop(ctx))
			}
			t.Fatalf("SubscribeDurable(From 5, the store's end 4) = %v, want ErrInvalid", err)
		}
		require.ErrorContains(t, err, "past the store's end")
		require.Equal(t, -1, savedCheckpoint(t, s, "past"), "no checkpoint saved for a refused From")

		d = subscribeDurable(t, bus, s, nil, "at-end", h, &eventbus.DurableOptions{From: 4})
		require.Equal(t, 4, savedCheckpoint(t, s, "at-end"), "a From at the store's end, after its last checkpoint")
		require.NoError(t, d.Stop(ctx))
	})
}
