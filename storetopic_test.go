package eventbus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

func newStoreTopic[T any](t *testing.T, b *eventbus.Bus, s eventbus.Store, r *eventbus.Registry, name string) *eventbus.StoreTopic[T] {
	t.Helper()
	topic, err := eventbus.NewStoreTopic[T](b, s, r, name)
	require.NoError(t, err)
	return topic
}

// A crash between append and delivery: the event is committed, and the
// process dies while the subscriber handles it. After the restart it is
// delivered, with its store position and ID.
func TestStoreTopicCrashBeforeDelivery(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()

		bus1 := newBus(t, nil)
		deposits := newStoreTopic[Deposited](t, bus1, s, reg, "deposits")
		_, err := deposits.Subscribe(ctx, "mailer", func(ctx context.Context, e eventbus.Event[Deposited]) error {
			<-ctx.Done() // the process dies before the handler is done
			return ctx.Err()
		}, nil)
		require.NoError(t, err)
		res, err := deposits.Publish(ctx, Deposited{Amount: 42}, eventbus.WithKey("account-1"))
		require.NoError(t, err)
		synctest.Wait()
		_ = bus1.Close() // the crash

		s = reopen()
		bus2 := newBus(t, nil)
		deposits = newStoreTopic[Deposited](t, bus2, s, reg, "deposits")
		var mu sync.Mutex
		var got []eventbus.Event[Deposited]
		d, err := deposits.Subscribe(ctx, "mailer", func(ctx context.Context, e eventbus.Event[Deposited]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e)
			return nil
		}, nil)
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, res.Position))

		var stored eventbus.RecordedEvent
		for e, err := range s.ReadStream(ctx, "deposits:account-1", nil) {
			require.NoError(t, err)
			stored = e
		}
		// Published outside any handler, the event starts its chain: the
		// store keeps its own ID as its correlation ID (see Header), for
		// every reader of the store, not only the bus's subscribers.
		if stored.CorrelationID != stored.ID || !stored.CausationID.IsZero() {
			t.Errorf("stored CorrelationID, CausationID = %v, %v, want %v (its own ID), zero", stored.CorrelationID, stored.CausationID, stored.ID)
		}
		mu.Lock()
		defer mu.Unlock()
		want := []eventbus.Event[Deposited]{{
			Header: eventbus.Header{
				ID: stored.ID, Type: "account.deposited", Topic: "durable.deposits.mailer", Key: "deposits:account-1",
				Time: stored.Time, SchemaVersion: 1, CorrelationID: stored.ID, Metadata: nil, Position: res.Position,
			},
			Payload: Deposited{Amount: 42},
		}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("delivered after the restart (-want +got):\n%s", diff)
		}
	})
}

// Subscribers see only the topic's events, committed, in order per key,
// and events published by a handler are linked to the handled one.
func TestStoreTopicDelivery(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		deposits := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		fees := newStoreTopic[Withdrawn](t, bus, s, reg, "fees")

		var mu sync.Mutex
		amounts := map[string][]int{}
		var charged []eventbus.Event[Withdrawn]
		_, err := deposits.Subscribe(ctx, "fees", func(ctx context.Context, e eventbus.Event[Deposited]) error {
			mu.Lock()
			amounts[e.Key] = append(amounts[e.Key], e.Payload.Amount)
			mu.Unlock()
			_, err := fees.Publish(ctx, Withdrawn{Amount: 1}, eventbus.WithKey(e.Key))
			return err
		}, nil)
		require.NoError(t, err)
		_, err = fees.Subscribe(ctx, "audit", func(ctx context.Context, e eventbus.Event[Withdrawn]) error {
			mu.Lock()
			defer mu.Unlock()
			charged = append(charged, e)
			return nil
		}, nil)
		require.NoError(t, err)

		for i := range 3 {
			for _, key := range []string{"x", "y"} {
				_, err := deposits.Publish(ctx, Deposited{Amount: i}, eventbus.WithKey(key))
				require.NoError(t, err)
			}
		}
		synctest.Wait()
		require.NoError(t, bus.Shutdown(ctx))
		if diff := cmp.Diff(map[string][]int{"deposits:x": {0, 1, 2}, "deposits:y": {0, 1, 2}}, amounts); diff != "" {
			t.Errorf("deposits handled per key (-want +got):\n%s", diff)
		}
		if len(charged) != 6 {
			t.Errorf("%d fees handled, want 6", len(charged))
		}
		for _, e := range charged {
			if e.CausationID.IsZero() || e.CorrelationID == e.ID || e.Key != "fees:deposits:x" && e.Key != "fees:deposits:y" {
				t.Errorf("fee %+v is not linked to its deposit", e.Header)
			}
		}
	})
}

// TestStoreTopicNameTypeBusStore checks that a StoreTopic says what it was
// made of, as a Topic does, so that code given only the topic (a test
// helper recording what is published to it, say) can read its events from
// its store and wait on its bus: it did not say any of it.
func TestStoreTopicNameTypeBusStore(t *testing.T) {
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	defer s.Close()
	bus := newBus(t, nil)
	deposits := newStoreTopic[Deposited](t, bus, s, newBankRegistry(t), "deposits")
	require.Equal(t, "deposits", deposits.Name())
	require.Equal(t, "account.deposited", deposits.EventType())
	require.Same(t, bus, deposits.Bus())
	require.Equal(t, eventbus.Store(s), deposits.Store())

	res, err := deposits.Publish(context.Background(), Deposited{Amount: 5}, eventbus.WithKey("a"))
	require.NoError(t, err)
	read := 0
	for e, err := range deposits.Store().ReadAll(context.Background(), &eventbus.ReadOptions{From: res.Position}) {
		require.NoError(t, err)
		read++
		require.Equal(t, deposits.EventType(), e.Type, "the Type of the events Publish appends")
		require.Equal(t, deposits.Name()+":a", e.Stream)
	}
	require.Equal(t, 1, read, "events read from the topic's store")
}

// An event published by a handler with WithCorrelationID keeps that
// correlation ID, and is still caused by the handled event.
func TestStoreTopicCorrelationOptionWins(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		deposits := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		fees := newStoreTopic[Withdrawn](t, bus, s, reg, "fees")
		corr := eventbus.NewID()
		_, err := deposits.Subscribe(ctx, "fees", func(ctx context.Context, e eventbus.Event[Deposited]) error {
			_, err := fees.Publish(ctx, Withdrawn{Amount: 1}, eventbus.WithKey("x"), eventbus.WithCorrelationID(corr))
			return err
		}, nil)
		require.NoError(t, err)
		res, err := deposits.Publish(ctx, Deposited{Amount: 5}, eventbus.WithKey("x"))
		require.NoError(t, err)
		synctest.Wait()
		require.NoError(t, bus.Shutdown(ctx))

		var deposit eventbus.RecordedEvent
		for e, err := range s.ReadStream(ctx, "deposits:x", nil) {
			require.NoError(t, err)
			deposit = e
		}
		require.Equal(t, res.Position, deposit.Position)
		var got []eventbus.RecordedEvent
		for e, err := range s.ReadStream(ctx, "fees:x", nil) {
			require.NoError(t, err)
			got = append(got, e)
		}
		require.Len(t, got, 1)
		if got[0].CorrelationID != corr {
			t.Errorf("fee's correlation ID = %v, want %v from WithCorrelationID", got[0].CorrelationID, corr)
		}
		if got[0].CausationID != deposit.ID {
			t.Errorf("fee's causation ID = %v, want the deposit's ID %v", got[0].CausationID, deposit.ID)
		}
	})
}

// TestStoreTopicCarriesMetadata checks that a StoreTopic's subscribers
// see the metadata of the event as published, and its trace context, as
// Traceparent's doc promises in a handler, and that what they publish
// with their context carries that trace context on and is linked to the
// event: the metadata goes through the store and a durable subscription's
// pump, which built each event's header without it (a throwaway change)
// and passed every test, so a trace begun at an HTTP request ended at the
// first StoreTopic.
func TestStoreTopicCarriesMetadata(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, reopen func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		deposits := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		fees := newStoreTopic[Withdrawn](t, bus, s, reg, "fees")
		var mu sync.Mutex
		var deposit, fee eventbus.Header
		var traces []string
		_, err := deposits.Subscribe(ctx, "fees", func(ctx context.Context, e eventbus.Event[Deposited]) error {
			mu.Lock()
			deposit = e.Header
			traces = append(traces, "deposit: "+eventbus.Traceparent(ctx))
			mu.Unlock()
			_, err := fees.Publish(ctx, Withdrawn{Amount: 1}, eventbus.WithKey("x"))
			return err
		}, nil)
		require.NoError(t, err)
		_, err = fees.Subscribe(ctx, "audit", func(ctx context.Context, e eventbus.Event[Withdrawn]) error {
			mu.Lock()
			defer mu.Unlock()
			fee = e.Header
			traces = append(traces, "fee: "+eventbus.Traceparent(ctx))
			return nil
		}, nil)
		require.NoError(t, err)
		traced, err := eventbus.WithTraceparent(ctx, tp)
		require.NoError(t, err)
		_, err = deposits.Publish(traced, Deposited{Amount: 5}, eventbus.WithKey("x"), eventbus.WithMetadata(eventbus.Metadata{"tenant": "t1"}))
		require.NoError(t, err)
		synctest.Wait()
		require.NoError(t, bus.Shutdown(ctx))

		require.Equal(t, []string{"deposit: " + tp, "fee: " + tp}, traces, "Traceparent in the handlers")
		require.Equal(t, eventbus.Metadata{"tenant": "t1", eventbus.TraceparentKey: tp}, deposit.Metadata, "the deposit's metadata")
		require.Equal(t, eventbus.Metadata{eventbus.TraceparentKey: tp}, fee.Metadata, "the fee's metadata: the trace context alone")
		require.Equal(t, deposit.ID, fee.CausationID, "the fee's causation")
		require.Equal(t, deposit.ID, fee.CorrelationID, "the fee's correlation: the deposit's, its own ID")
	})
}

func TestNewStoreTopicInvalid(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newBankRegistry(t)
	bus := newBus(t, nil)
	if _, err := eventbus.NewStoreTopic[Deposited](bus, s, reg, "a b"); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("NewStoreTopic(bad name) = %v, want %v", err, eventbus.ErrInvalid)
	}
	if _, err := eventbus.NewStoreTopic[Deposited](bus, s, reg, strings.Repeat("t", 201)); !errors.Is(err, eventbus.ErrInvalid) {
		t.Errorf("NewStoreTopic(201-byte name) = %v, want %v", err, eventbus.ErrInvalid)
	}
	if _, err := eventbus.NewStoreTopic[Deposited](bus, s, reg, strings.Repeat("t", 200)); err != nil {
		t.Errorf("NewStoreTopic(200-byte name) = %v, want nil", err)
	}
	// ErrInvalid's message says which argument was wrong: this one said
	// "nil store or registry" for either.
	if _, err := eventbus.NewStoreTopic[Deposited](bus, nil, reg, "x"); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "nil Store") || strings.Contains(err.Error(), "egistry") {
		t.Errorf("NewStoreTopic(nil store) = %v, want %v naming the nil Store alone", err, eventbus.ErrInvalid)
	}
	if _, err := eventbus.NewStoreTopic[Deposited](bus, s, nil, "x"); !errors.Is(err, eventbus.ErrInvalid) || !strings.Contains(err.Error(), "nil Registry") || strings.Contains(err.Error(), "nil Store") {
		t.Errorf("NewStoreTopic(nil registry) = %v, want %v naming the nil Registry alone", err, eventbus.ErrInvalid)
	}
	if _, err := eventbus.NewStoreTopic[Order](bus, s, reg, "x"); !errors.Is(err, eventbus.ErrUnknownEvent) {
		t.Errorf("NewStoreTopic(unregistered type) = %v, want %v", err, eventbus.ErrUnknownEvent)
	}
}

// TestStoreTopicNamesDoNotMix publishes on two topics, one named after the
// other and a dash: their streams and subscriptions stay apart, even for
// keys that would join the names alike.
func TestStoreTopicNamesDoNotMix(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		orders := newStoreTopic[Deposited](t, bus, s, reg, "orders")
		eu := newStoreTopic[Deposited](t, bus, s, reg, "orders-eu")
		var mu sync.Mutex
		got := map[string][]int{}
		for name, topic := range map[string]*eventbus.StoreTopic[Deposited]{"orders": orders, "orders-eu": eu} {
			_, err := topic.Subscribe(ctx, "audit", func(_ context.Context, e eventbus.Event[Deposited]) error {
				mu.Lock()
				defer mu.Unlock()
				got[name] = append(got[name], e.Payload.Amount)
				return nil
			}, nil)
			require.NoError(t, err)
		}
		a, err := orders.Publish(ctx, Deposited{Amount: 1}, eventbus.WithKey("eu-1"))
		require.NoError(t, err)
		b, err := eu.Publish(ctx, Deposited{Amount: 2}, eventbus.WithKey("1"))
		require.NoError(t, err)
		require.Zero(t, a.Revision)
		require.Zero(t, b.Revision, "a stream of its own")
		synctest.Wait()
		require.NoError(t, bus.Shutdown(ctx))
		require.Equal(t, map[string][]int{"orders": {1}, "orders-eu": {2}}, got)
	})
}

// TestStoreTopicSubscribeSelectsItsType shares a topic's stream with
// events of another type, as an aggregate keeping its stream under the
// topic's name does: a subscription of the topic hands its handler the
// events of T's type alone, and leaves the others be, not dead-lettered
// as events that do not decode to T.
func TestStoreTopicSubscribeSelectsItsType(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		deposits := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		var mu sync.Mutex
		var got []int
		d, err := deposits.Subscribe(ctx, "audit", func(_ context.Context, e eventbus.Event[Deposited]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.Payload.Amount)
			return nil
		}, nil)
		require.NoError(t, err)
		_, err = deposits.Publish(ctx, Deposited{Amount: 1}, eventbus.WithKey("a"))
		require.NoError(t, err)
		w, err := reg.Encode(Withdrawn{Amount: 2})
		require.NoError(t, err)
		_, err = s.Append(ctx, "deposits:a", eventbus.Any, w)
		require.NoError(t, err)
		last, err := deposits.Publish(ctx, Deposited{Amount: 3}, eventbus.WithKey("a"))
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, last.Position))
		require.NoError(t, d.Stop(ctx))
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff([]int{1, 3}, got); diff != "" {
			t.Errorf("deposits handled (-want +got):\n%s", diff)
		}
		for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			t.Errorf("dead letter of type %s: %v", dl.Type, dl.Err)
		}
	})
}

// ref is a payload handled by pointer whose key comes from a method of its
// value, which a nil *ref does not have.
type ref struct{ ID string }

func (*ref) EventType() string    { return "ref" }
func (r ref) AggregateID() string { return r.ID }

// note is a payload of pointer type without a key method.
type note struct{ Text string }

func (*note) EventType() string { return "note" }

func TestStoreTopicBadInput(t *testing.T) {
	s, _ := backends[0].open(t)
	reg := newBankRegistry(t)
	require.NoError(t, eventbus.Register[*ref](reg, nil))
	require.NoError(t, eventbus.Register[*note](reg, nil))
	bus := newBus(t, nil)
	deposits := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
	refs := newStoreTopic[*ref](t, bus, s, reg, "refs")
	notes := newStoreTopic[*note](t, bus, s, reg, "notes")
	ctx := context.Background()
	_, err := deposits.Publish(ctx, Deposited{Amount: 1}, nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil option")
	_, err = refs.Publish(ctx, nil)
	require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil payload whose key comes from its method")
	// Stored, a nil would reach every subscriber as JSON's null, for good.
	_, err = notes.Publish(ctx, nil, eventbus.WithKey("n1"))
	require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil payload")
	_, err = refs.Publish(ctx, &ref{ID: "r1"})
	require.NoError(t, err)
	if got := readAll(t, s); len(got) != 1 || got[0].Type != "ref" {
		t.Errorf("the store holds %d events, want the ref alone", len(got))
	}
}

// TestStoreTopicSubscriptionNamesDoNotMix subscribes "eu.mailer" to the
// topic "orders" and "mailer" to the topic "orders.eu", names that joined
// by a '.' read alike: each is a durable subscription of its own, with a
// checkpoint of its own, and both run at once.
func TestStoreTopicSubscriptionNamesDoNotMix(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		orders := newStoreTopic[Deposited](t, bus, s, reg, "orders")
		eu := newStoreTopic[Deposited](t, bus, s, reg, "orders.eu")
		var mu sync.Mutex
		got := map[string][]int{}
		handler := func(topic string) eventbus.Handler[Deposited] {
			return func(_ context.Context, e eventbus.Event[Deposited]) error {
				mu.Lock()
				defer mu.Unlock()
				got[topic] = append(got[topic], e.Payload.Amount)
				return nil
			}
		}
		_, err := eu.Publish(ctx, Deposited{Amount: 1})
		require.NoError(t, err)
		last, err := orders.Publish(ctx, Deposited{Amount: 2})
		require.NoError(t, err)

		mailer, err := orders.Subscribe(ctx, "eu.mailer", handler("orders"), nil)
		require.NoError(t, err)
		require.NoError(t, mailer.WaitFor(ctx, last.Position))
		require.NoError(t, mailer.Stop(ctx)) // its checkpoint is past both events
		euMailer, err := eu.Subscribe(ctx, "mailer", handler("orders.eu"), nil)
		require.NoError(t, err)
		require.NoError(t, euMailer.WaitFor(ctx, last.Position))
		mu.Lock()
		require.Equal(t, []int{1}, got["orders.eu"], "orders.eu's event, before the checkpoint of orders' subscription")
		mu.Unlock()
		_, err = orders.Subscribe(ctx, "eu.mailer", handler("orders"), nil)
		require.NoError(t, err, "resuming orders' subscription while orders.eu's runs")

		synctest.Wait()
		require.NoError(t, bus.Shutdown(ctx))
		require.Equal(t, map[string][]int{"orders": {2}, "orders.eu": {1}}, got)
		if mailer.Name() == euMailer.Name() {
			t.Errorf("both subscriptions are named %q", mailer.Name())
		}
	})
}

// TestStoreTopicSubscriptionNames subscribes names at the edges of the
// rules to topics with names at theirs: every pair of valid names makes a
// durable subscription of its own, named after the two where that is
// unambiguous, and bad names are refused.
func TestStoreTopicSubscriptionNames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := backends[0].open(t)
		reg := newBankRegistry(t)
		bus := newBus(t, &eventbus.Options{Workers: 1})
		ctx := context.Background()
		h := func(context.Context, eventbus.Event[Deposited]) error { return nil }
		longest := strings.Repeat("t", 200)
		topics := []string{"t", "t.", "t.t", "t..", longest[:199] + ".", longest}
		subs := []string{
			"s", "t", ".", "..", "s.t", "t.s", "-", "_", "sha256-0",
			strings.Repeat("s", 39), strings.Repeat("s", 40), strings.Repeat("s", 249), strings.Repeat(".", 249),
		}
		seen := map[string]string{} // durable name -> topic and subscription names
		subscribe := func(st *eventbus.StoreTopic[Deposited], topic, sub string) string {
			t.Helper()
			d, err := st.Subscribe(ctx, sub, h, nil)
			if err != nil {
				t.Errorf("StoreTopic(%.40q).Subscribe(%.40q) = %v, want nil", topic, sub, err)
				return ""
			}
			pair := topic + " / " + sub
			if other, ok := seen[d.Name()]; ok {
				t.Errorf("%.90s and %.90s are both the durable subscription %.90q", other, pair, d.Name())
			}
			seen[d.Name()] = pair
			readable := topic + "." + sub
			if !strings.Contains(sub, ".") && !strings.HasPrefix(sub, "sha256-") && len(readable) <= 240 && d.Name() != readable {
				t.Errorf("StoreTopic(%.40q).Subscribe(%.40q).Name() = %.90q, want %.90q", topic, sub, d.Name(), readable)
			}
			return d.Name()
		}
		for _, topic := range topics {
			st := newStoreTopic[Deposited](t, bus, s, reg, topic)
			for _, sub := range subs {
				subscribe(st, topic, sub)
			}
			// A subscription named like the hashed name of another.
			hashed := subscribe(st, topic, "s.s")
			subscribe(st, topic, strings.TrimPrefix(hashed, topic+"."))
			for _, bad := range []string{"", "s s", strings.Repeat("s", 250)} {
				if _, err := st.Subscribe(ctx, bad, h, nil); !errors.Is(err, eventbus.ErrInvalid) {
					t.Errorf("StoreTopic(%.40q).Subscribe(%.40q) = %v, want %v", topic, bad, err, eventbus.ErrInvalid)
				}
			}
		}
		require.NoError(t, bus.Close())
	})
}

// TestStoreTopicSubscribeOldVersion subscribes to a store topic of an old
// schema version of its event type: the events reach handlers upcast to the
// latest version, which the old Go type cannot hold, so Subscribe refuses
// it instead of dead-lettering every event. Publishing the old version
// still works, and a subscriber of the latest version gets it upcast.
func TestStoreTopicSubscribeOldVersion(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
		ctx := context.Background()
		reg := newUserRegistry(t, nil)
		bus := newBus(t, nil)
		v1 := newStoreTopic[userV1](t, bus, s, reg, "users")
		v2 := newStoreTopic[userV2](t, bus, s, reg, "users")
		v3 := newStoreTopic[userV3](t, bus, s, reg, "users")
		if _, err := v1.Subscribe(ctx, "old", func(context.Context, eventbus.Event[userV1]) error { return nil }, nil); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("StoreTopic[userV1].Subscribe = %v, want %v", err, eventbus.ErrInvalid)
		}
		if _, err := v2.Subscribe(ctx, "old", func(context.Context, eventbus.Event[userV2]) error { return nil }, nil); !errors.Is(err, eventbus.ErrInvalid) {
			t.Errorf("StoreTopic[userV2].Subscribe = %v, want %v", err, eventbus.ErrInvalid)
		}
		var mu sync.Mutex
		var got []userV3
		d, err := v3.Subscribe(ctx, "new", func(_ context.Context, e eventbus.Event[userV3]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.Payload)
			return nil
		}, nil)
		require.NoError(t, err)
		res, err := v1.Publish(ctx, userV1{Name: "Ada Lovelace"})
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, res.Position))
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff([]userV3{{First: "Ada", Last: "Lovelace", Country: "unknown"}}, got); diff != "" {
			t.Errorf("handled (-want +got):\n%s", diff)
		}
	})
}

// TestStoreTopicSubscribeUpcastHeader checks that a handler given an event
// upcast to the latest schema version reads that version in its header,
// the version of the payload it holds, not the version stored.
func TestStoreTopicSubscribeUpcastHeader(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, _ *eventbus.Registry) {
		ctx := context.Background()
		reg := newUserRegistry(t, nil)
		bus := newBus(t, nil)
		v1 := newStoreTopic[userV1](t, bus, s, reg, "users")
		v3 := newStoreTopic[userV3](t, bus, s, reg, "users")
		var mu sync.Mutex
		var got []int
		d, err := v3.Subscribe(ctx, "new", func(_ context.Context, e eventbus.Event[userV3]) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e.SchemaVersion)
			return nil
		}, nil)
		require.NoError(t, err)
		_, err = v1.Publish(ctx, userV1{Name: "Ada Lovelace"})
		require.NoError(t, err)
		res, err := v3.Publish(ctx, userV3{First: "Alan", Last: "Turing"})
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, res.Position))
		mu.Lock()
		defer mu.Unlock()
		if diff := cmp.Diff([]int{3, 3}, got); diff != "" {
			t.Errorf("SchemaVersion in the handlers' headers (-want +got):\n%s", diff)
		}
	})
}

// TestStoreTopicNewID publishes to a StoreTopic of a bus with Options.NewID,
// as eventbustest.NewBus makes for stable test output: the stored event, and
// the subscriber's, carry that ID, which is also its correlation ID. They
// carried a random one from the registry.
func TestStoreTopicNewID(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		id := eventbus.NewID()
		bus := newBus(t, &eventbus.Options{NewID: fixedIDs(id)})
		deposits := newStoreTopic[Deposited](t, bus, s, reg, "deposits")
		got := make(chan eventbus.Header, 1)
		d, err := deposits.Subscribe(ctx, "ledger", func(_ context.Context, e eventbus.Event[Deposited]) error {
			got <- e.Header
			return nil
		}, nil)
		require.NoError(t, err)
		res, err := deposits.Publish(ctx, Deposited{Amount: 1}, eventbus.WithKey("a"))
		require.NoError(t, err)
		require.NoError(t, d.WaitFor(ctx, res.Position))
		if h := <-got; h.ID != id || h.CorrelationID != id {
			t.Errorf("handled event ID, CorrelationID = %v, %v, want %v, the bus's NewID", h.ID, h.CorrelationID, id)
		}
		for e, err := range s.ReadStream(ctx, "deposits:a", nil) {
			require.NoError(t, err)
			if e.ID != id {
				t.Errorf("stored event ID = %v, want %v", e.ID, id)
			}
		}
	})
}

// TestStoreTopicOptionID publishes twice to a StoreTopic with a
// PublishOption of the caller's that sets the event's ID, as a caller
// retrying a Publish whose result it never got does, to make the retry an
// idempotent replay: Topic.Publish keeps such an ID, and StoreTopic.Publish
// must too, storing the event once and returning its result again. It
// gave each append a new ID and stored the event twice.
func TestStoreTopicOptionID(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		id := eventbus.NewID()
		withID := func(h *eventbus.Header) { h.ID = id }
		deposits := newStoreTopic[Deposited](t, newBus(t, nil), s, reg, "deposits")
		first, err := deposits.Publish(ctx, Deposited{Amount: 1}, eventbus.WithKey("a"), withID)
		require.NoError(t, err)
		again, err := deposits.Publish(ctx, Deposited{Amount: 1}, eventbus.WithKey("a"), withID)
		require.NoError(t, err)
		if again != first {
			t.Errorf("Publish again with ID %v = %+v, want %+v, the first's", id, again, first)
		}
		var ids []eventbus.ID
		for e, err := range s.ReadStream(ctx, "deposits:a", nil) {
			require.NoError(t, err)
			ids = append(ids, e.ID)
		}
		if diff := cmp.Diff([]eventbus.ID{id}, ids); diff != "" {
			t.Errorf("IDs stored (-want +got):\n%s", diff)
		}
	})
}

// TestStoreTopicOptionSeesStampedHeader publishes to a StoreTopic with a
// PublishOption that looks at the header: it must see what it sees on a
// Topic, as PublishOption's doc says, the event type, topic, schema
// version, key, a time, and the ID from Options.NewID. It saw the key
// alone, so an option tagging metadata with the type or ID did nothing.
func TestStoreTopicOptionSeesStampedHeader(t *testing.T) {
	ctx := context.Background()
	id := eventbus.NewID()
	bus := newBus(t, &eventbus.Options{NewID: fixedIDs(id)})
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	deposits := newStoreTopic[Deposited](t, bus, s, newBankRegistry(t), "deposits")
	var seen eventbus.Header
	_, err = deposits.Publish(ctx, Deposited{Amount: 1}, eventbus.WithKey("a"), func(h *eventbus.Header) { seen = *h })
	require.NoError(t, err)
	want := eventbus.Header{ID: id, Type: "account.deposited", Topic: "deposits", Key: "a", SchemaVersion: 1}
	if diff := cmp.Diff(want, seen, cmpopts.IgnoreFields(eventbus.Header{}, "Time")); diff != "" || seen.Time.IsZero() {
		t.Errorf("a PublishOption saw the header (-want +got), time %v:\n%s", seen.Time, diff)
	}
}

// newOrderTopic returns a StoreTopic of Orders, keyed by their Key, on s.
func newOrderTopic(t *testing.T, bus *eventbus.Bus, s eventbus.Store, reg *eventbus.Registry) *eventbus.StoreTopic[Order] {
	t.Helper()
	require.NoError(t, eventbus.Register[Order](reg, nil))
	return newStoreTopic[Order](t, bus, s, reg, "orders")
}

// TestStoreTopicPublishBatch publishes a batch over three keys: each
// result is its own event's revision and position in the store, the
// subscriber gets each key's events in the order given, and an event
// published with a handler's context is linked to the handled one.
func TestStoreTopicPublishBatch(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		orders := newOrderTopic(t, bus, s, reg)
		_, err := orders.Publish(ctx, Order{Key: "y", N: -1}) // so that y's revisions start at 1
		require.NoError(t, err)
		var mu sync.Mutex
		handled := map[string][]int{}
		var parent eventbus.Header
		var children []eventbus.Header
		d, err := orders.Subscribe(ctx, "ledger", func(ctx context.Context, e eventbus.Event[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			handled[e.Key] = append(handled[e.Key], e.Payload.N)
			switch e.Payload.Key {
			case "p":
				parent = e.Header
				_, err := orders.PublishBatch(ctx, []Order{{Key: "c", N: 1}, {Key: "d", N: 2}})
				return err
			case "c", "d":
				children = append(children, e.Header)
			}
			return nil
		}, nil)
		require.NoError(t, err)

		batch := []Order{{Key: "x", N: 0}, {Key: "y", N: 1}, {Key: "x", N: 2}, {Key: "z", N: 3}, {Key: "y", N: 4}, {Key: "x", N: 5}}
		res, err := orders.PublishBatch(ctx, batch)
		require.NoError(t, err)
		stored := map[int]eventbus.AppendResult{}
		for _, e := range readAll(t, s) {
			o, err := eventbus.Decode[Order](reg, e.EventData)
			require.NoError(t, err)
			stored[o.N] = eventbus.AppendResult{Revision: e.Revision, Position: e.Position}
		}
		want := make([]eventbus.AppendResult, len(batch))
		for i, o := range batch {
			want[i] = stored[o.N]
		}
		if diff := cmp.Diff(want, res); diff != "" {
			t.Errorf("results (-stored +returned):\n%s", diff)
		}
		// Grouped by stream, in the order of the streams' first events:
		// x's three events first, then y's two, then z's.
		if diff := cmp.Diff([]eventbus.AppendResult{{0, 1}, {1, 4}, {1, 2}, {0, 6}, {2, 5}, {2, 3}}, res); diff != "" {
			t.Errorf("results (-want +got):\n%s", diff)
		}

		_, err = orders.Publish(ctx, Order{Key: "p"})
		require.NoError(t, err)
		synctest.Wait()
		require.NoError(t, d.Stop(ctx))
		mu.Lock()
		defer mu.Unlock()
		want2 := map[string][]int{"orders:x": {0, 2, 5}, "orders:y": {-1, 1, 4}, "orders:z": {3}, "orders:p": {0}, "orders:c": {1}, "orders:d": {2}}
		if diff := cmp.Diff(want2, handled); diff != "" {
			t.Errorf("handled per stream (-want +got):\n%s", diff)
		}
		require.Len(t, children, 2)
		for _, c := range children {
			if c.CausationID != parent.ID || c.CorrelationID != parent.CorrelationID {
				t.Errorf("event published in a batch by a handler: causation %v, correlation %v, want %v, %v", c.CausationID, c.CorrelationID, parent.ID, parent.CorrelationID)
			}
		}
	})
}

// TestStoreTopicPublishBatchAllOrNothing fails batches for bad input, for
// the store's refusal of one stream, and for size: the store holds none
// of their events, not even those of the other streams.
func TestStoreTopicPublishBatchAllOrNothing(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		bus := newBus(t, nil)
		orders := newOrderTopic(t, bus, s, reg)
		require.NoError(t, eventbus.Register[*ref](reg, nil))
		refs := newStoreTopic[*ref](t, bus, s, reg, "refs")

		_, err := refs.PublishBatch(ctx, []*ref{{ID: "a"}, {ID: "b"}, nil})
		require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil payload whose key comes from its method")
		require.ErrorContains(t, err, "(payloads[2])")
		_, err = orders.PublishBatch(ctx, []Order{{Key: "a"}, {Key: "b"}}, nil)
		require.ErrorIs(t, err, eventbus.ErrInvalid, "a nil option")
		_, err = orders.PublishBatch(ctx, []Order{{Key: "a"}, {Key: "\xff"}})
		require.ErrorIs(t, err, eventbus.ErrInvalid, "a key that makes no stream name")
		require.ErrorContains(t, err, `store topic "orders": PublishBatch with key "\xff": `)
		require.ErrorContains(t, err, "(payloads[1])")
		_, err = orders.Publish(ctx, Order{Key: strings.Repeat("k", 1024)})
		require.ErrorIs(t, err, eventbus.ErrInvalid, "a key that makes too long a stream name")
		require.ErrorContains(t, err, `store topic "orders": Publish with key "kkk`)

		require.NoError(t, s.Tombstone(ctx, "orders:gone", eventbus.Any))
		_, err = orders.PublishBatch(ctx, []Order{{Key: "a"}, {Key: "gone"}})
		require.ErrorIs(t, err, eventbus.ErrStreamDeleted)

		if got := readAll(t, s); len(got) != 0 {
			t.Errorf("the store holds %d events after failed batches, want none: %v", len(got), got)
		}
		res, err := orders.PublishBatch(ctx, nil)
		require.NoError(t, err, "an empty batch")
		require.Empty(t, res, "the results of an empty batch")
		require.Empty(t, readAll(t, s), "the store after an empty batch")
	})
}

// TestStoreTopicPublishBatchTooLarge publishes a batch over two streams
// that is larger than the store takes in one append: ErrTooLarge, and
// nothing stored, though each stream's part would fit alone.
func TestStoreTopicPublishBatchTooLarge(t *testing.T) {
	s, err := eventbus.NewMemoryStore(&eventbus.MemoryStoreOptions{MaxBatchSize: 4 << 10})
	require.NoError(t, err)
	defer s.Close()
	reg := newBankRegistry(t)
	orders := newOrderTopic(t, newBus(t, nil), s, reg)
	a, b := strings.Repeat("a", 1000), strings.Repeat("b", 1000)
	batch := []Order{{Key: a}, {Key: b}, {Key: a}, {Key: b}, {Key: a}, {Key: b}}
	_, err = orders.PublishBatch(context.Background(), batch)
	require.ErrorIs(t, err, eventbus.ErrTooLarge)
	require.Empty(t, readAll(t, s), "the store after a batch too large")
	_, err = orders.PublishBatch(context.Background(), batch[:2])
	require.NoError(t, err, "a batch that fits")
}

// TestStoreTopicPublishBatchRetry publishes a batch again with the same
// IDs, as a caller does whose first call's result was lost: the store
// takes it as an idempotent replay, stores nothing twice, and the retry
// returns the first call's results.
func TestStoreTopicPublishBatchRetry(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		ids := []eventbus.ID{eventbus.NewID(), eventbus.NewID(), eventbus.NewID()}
		orders := newOrderTopic(t, newBus(t, &eventbus.Options{NewID: fixedIDs(ids...)}), s, reg)
		batch := []Order{{Key: "a", N: 1}, {Key: "b", N: 2}, {Key: "a", N: 3}}
		first, err := orders.PublishBatch(ctx, batch)
		require.NoError(t, err)
		again, err := orders.PublishBatch(ctx, batch)
		require.NoError(t, err)
		if diff := cmp.Diff(first, again); diff != "" {
			t.Errorf("results of the retry (-first +retry):\n%s", diff)
		}
		var stored []eventbus.ID
		for _, e := range readAll(t, s) {
			stored = append(stored, e.ID)
		}
		if diff := cmp.Diff([]eventbus.ID{ids[0], ids[2], ids[1]}, stored); diff != "" {
			t.Errorf("IDs stored (-want +got):\n%s", diff)
		}
	})
}

// shortResultStore breaks the Store contract: AppendMulti returns one
// result fewer than it was given appends.
type shortResultStore struct{ eventbus.Store }

func (s shortResultStore) AppendMulti(ctx context.Context, appends ...eventbus.StreamAppend) ([]eventbus.AppendResult, error) {
	res, err := s.Store.AppendMulti(ctx, appends...)
	if len(res) > 0 {
		res = res[1:]
	}
	return res, err
}

// TestStoreTopicPublishBatchShortResults publishes a batch to a store
// that returns too few results: an error that says so, not an index out
// of range.
func TestStoreTopicPublishBatchShortResults(t *testing.T) {
	s, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	defer s.Close()
	orders := newOrderTopic(t, newBus(t, nil), shortResultStore{s}, newBankRegistry(t))
	_, err = orders.PublishBatch(context.Background(), []Order{{Key: "a"}, {Key: "b"}})
	require.ErrorContains(t, err, "Store.AppendMulti of 2 streams returned a result count of 1")
	require.ErrorIs(t, err, eventbus.ErrInvalid, "a store that breaks its contract, as elsewhere")
}

// TestStoreTopicPublishBatchOptions publishes a batch with options and a
// context that carries a trace: each event gets them, as from Publish
// (the key of WithKey, which puts them all in one stream, the metadata and
// the trace context, the correlation ID), and an ID of its own; the
// caller's metadata is left as it was.
func TestStoreTopicPublishBatchOptions(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		orders := newOrderTopic(t, newBus(t, nil), s, reg)
		traced, err := eventbus.WithTraceparent(ctx, tp)
		require.NoError(t, err)
		md := eventbus.Metadata{"tenant": "t1"}
		corr := eventbus.NewID()
		res, err := orders.PublishBatch(traced, []Order{{Key: "x", N: 0}, {Key: "y", N: 1}, {Key: "x", N: 2}},
			eventbus.WithKey("k"), eventbus.WithMetadata(md), eventbus.WithCorrelationID(corr))
		require.NoError(t, err)
		require.Equal(t, []eventbus.AppendResult{{Revision: 0, Position: 0}, {Revision: 1, Position: 1}, {Revision: 2, Position: 2}}, res)
		require.Equal(t, eventbus.Metadata{"tenant": "t1"}, md, "the caller's metadata")
		var ns []int
		ids := map[eventbus.ID]bool{}
		for _, e := range readAll(t, s) {
			require.Equal(t, "orders:k", e.Stream)
			require.Equal(t, eventbus.Metadata{"tenant": "t1", eventbus.TraceparentKey: tp}, e.Metadata, "metadata of event %d", e.Position)
			require.Equal(t, corr, e.CorrelationID, "correlation ID of event %d", e.Position)
			require.True(t, e.CausationID.IsZero(), "causation ID of event %d", e.Position)
			ids[e.ID] = true
			o, err := eventbus.Decode[Order](reg, e.EventData)
			require.NoError(t, err)
			ns = append(ns, o.N)
		}
		require.Equal(t, []int{0, 1, 2}, ns, "events stored, in order")
		require.Len(t, ids, 3, "IDs of the events")
	})
}

// TestStoreTopicPublishBatchSameID publishes a batch with a PublishOption
// that sets the event ID, which it gives to every event of the batch: an
// error wrapping ErrInvalid that names the payloads, and nothing stored.
// Over two keys the store took the events, one ID in two streams, of which
// a subscriber's Idempotency would handle only the first; in one stream the
// store refused them with an error that named no payload.
func TestStoreTopicPublishBatchSameID(t *testing.T) {
	eachBackend(t, true, func(t *testing.T, s eventbus.Store, _ func() eventbus.Store, reg *eventbus.Registry) {
		ctx := context.Background()
		orders := newOrderTopic(t, newBus(t, nil), s, reg)
		id := eventbus.NewID()
		withID := func(h *eventbus.Header) { h.ID = id }
		for _, keys := range [][]string{{"a", "b"}, {"a", "a"}} {
			_, err := orders.PublishBatch(ctx, []Order{{Key: "x"}, {Key: keys[0]}, {Key: keys[1]}}, withID)
			require.ErrorIs(t, err, eventbus.ErrInvalid, "keys %v", keys)
			require.ErrorContains(t, err, "payloads[0] and payloads[1]", "keys %v", keys)
			require.Empty(t, readAll(t, s), "the store after a batch of one ID, keys %v", keys)
		}
		res, err := orders.PublishBatch(ctx, []Order{{Key: "a"}}, withID)
		require.NoError(t, err, "a batch of one event with the ID")
		again, err := orders.Publish(ctx, Order{Key: "a"}, withID)
		require.NoError(t, err)
		require.Equal(t, res[0], again, "Publish of the event again: an idempotent replay")
	})
}
