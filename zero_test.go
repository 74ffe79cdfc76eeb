package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// zeroCall is a call of an exported entry point on a nil value, or on a
// zero one that its constructor did not make.
type zeroCall struct {
	name string
	call func() error
	// want is ErrInvalid for a call that returns an error, or nil for one
	// that does the harmless thing; such a call returns an error saying
	// what it did instead.
	want error
}

// testZero runs each call and reports a panic, or an error that does not
// match its want.
func testZero(t *testing.T, calls []zeroCall) {
	t.Helper()
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s panicked: %v", c.name, r)
				}
			}()
			if err := c.call(); !errors.Is(err, c.want) {
				t.Errorf("%s = %v, want %v", c.name, err, c.want)
			}
		})
	}
}

// TestZeroBus checks that a nil Bus, and a zero one, which New did not
// make, are refused with an error wrapping ErrInvalid, or do the harmless
// thing where there is no error to return: NewTopic panicked on the zero
// Bus's nil maps, and every method on a nil Bus.
func TestZeroBus(t *testing.T) {
	ctx := context.Background()
	store, err := eventbus.NewMemoryStore(nil)
	require.NoError(t, err)
	reg := newUserRegistry(t, nil)
	ok := func(context.Context, eventbus.Event[eventbus.RecordedEvent]) error { return nil }
	var calls []zeroCall
	for kind, b := range map[string]func() *eventbus.Bus{
		"nil":  func() *eventbus.Bus { return nil },
		"zero": func() *eventbus.Bus { return new(eventbus.Bus) },
	} {
		calls = append(calls,
			zeroCall{kind + " Flush", func() error { return b().Flush(ctx) }, eventbus.ErrInvalid},
			zeroCall{kind + " Shutdown", func() error { return b().Shutdown(ctx) }, eventbus.ErrInvalid},
			zeroCall{kind + " Close", func() error { return b().Close() }, eventbus.ErrInvalid},
			zeroCall{kind + " NewTopic", func() error {
				_, err := eventbus.NewTopic[Order](b(), "orders", nil)
				return err
			}, eventbus.ErrInvalid},
			zeroCall{kind + " NewStoreTopic", func() error {
				_, err := eventbus.NewStoreTopic[userV1](b(), store, reg, "users")
				return err
			}, eventbus.ErrInvalid},
			zeroCall{kind + " SubscribeDurable", func() error {
				opts := &eventbus.DurableOptions{Subscription: eventbus.SubscriptionOptions{Workers: 1, QueueSize: 1}}
				_, err := eventbus.SubscribeDurable(ctx, b(), store, nil, "d", ok, opts)
				return err
			}, eventbus.ErrInvalid},
			zeroCall{kind + " Done", func() error {
				select {
				case <-b().Done():
					return nil
				default:
					return errors.New("Done() is not closed")
				}
			}, nil},
			zeroCall{kind + " DeadLetters", func() error {
				if q := b().DeadLetters(); q != nil {
					return fmt.Errorf("DeadLetters() = %p, want nil", q)
				}
				return nil
			}, nil},
			zeroCall{kind + " Metrics", func() error {
				if diff := cmp.Diff(eventbus.Metrics{}, b().Metrics()); diff != "" {
					return fmt.Errorf("Metrics() (-want +got):\n%s", diff)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroSubscription checks that Unsubscribe refuses a nil Subscription,
// and a zero one, which Subscribe did not make, with an error wrapping
// ErrInvalid, and that their names are empty: every call panicked on a nil
// Subscription, and Unsubscribe on a zero one.
func TestZeroSubscription(t *testing.T) {
	var calls []zeroCall
	for kind, s := range map[string]func() *eventbus.Subscription{
		"nil":  func() *eventbus.Subscription { return nil },
		"zero": func() *eventbus.Subscription { return new(eventbus.Subscription) },
	} {
		calls = append(calls,
			zeroCall{kind + " Unsubscribe", func() error { return s().Unsubscribe(context.Background()) }, eventbus.ErrInvalid},
			zeroCall{kind + " Name and Topic", func() error {
				if name, topic := s().Name(), s().Topic(); name != "" || topic != "" {
					return fmt.Errorf("Name(), Topic() = %q, %q, want empty", name, topic)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroDeadLetterQueue checks that a nil DeadLetterQueue, which
// DeadLetters returns for a Bus not made by New, holds nothing and that
// its Redrive returns an error wrapping ErrInvalid: every method panicked.
// A zero queue is an empty one.
func TestZeroDeadLetterQueue(t *testing.T) {
	var calls []zeroCall
	for kind, q := range map[string]func() *eventbus.DeadLetterQueue{
		"nil":  func() *eventbus.DeadLetterQueue { return nil },
		"zero": func() *eventbus.DeadLetterQueue { return new(eventbus.DeadLetterQueue) },
	} {
		want := error(nil) // a zero queue is empty: Redrive sends nothing
		if kind == "nil" {
			want = eventbus.ErrInvalid
		}
		calls = append(calls,
			zeroCall{kind + " Redrive", func() error {
				n, err := q().Redrive(context.Background(), eventbus.DeadLetterFilter{})
				if n != 0 {
					return fmt.Errorf("Redrive() sent %d", n)
				}
				return err
			}, want},
			zeroCall{kind + " Len, Evicted, All, Get and Discard", func() error {
				evicted, sinkErrs := q().Evicted()
				all := 0
				for range q().All(eventbus.DeadLetterFilter{}) {
					all++
				}
				_, got := q().Get("s", eventbus.NewID())
				if n, d := q().Len(), q().Discard(eventbus.DeadLetterFilter{}); n != 0 || evicted != 0 || sinkErrs != 0 || all != 0 || got || d != 0 {
					return fmt.Errorf("Len, Evicted, All, Get, Discard = %d, %d %d, %d, %t, %d, want nothing", n, evicted, sinkErrs, all, got, d)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroTopic checks that a nil Topic, and a zero one, which NewTopic did
// not make, are refused with an error wrapping ErrInvalid, and have no name,
// event type or bus: Name, EventType and Bus panicked on a nil Topic.
func TestZeroTopic(t *testing.T) {
	ctx := context.Background()
	var calls []zeroCall
	for kind, topic := range map[string]func() *eventbus.Topic[Order]{
		"nil":  func() *eventbus.Topic[Order] { return nil },
		"zero": func() *eventbus.Topic[Order] { return new(eventbus.Topic[Order]) },
	} {
		calls = append(calls,
			zeroCall{kind + " Publish", func() error { return topic().Publish(ctx, Order{}) }, eventbus.ErrInvalid},
			zeroCall{kind + " TryPublish", func() error { _, err := topic().TryPublish(ctx, Order{}); return err }, eventbus.ErrInvalid},
			zeroCall{kind + " Subscribe", func() error {
				_, err := topic().Subscribe("s", func(context.Context, eventbus.Event[Order]) error { return nil }, nil)
				return err
			}, eventbus.ErrInvalid},
			zeroCall{kind + " SubscribeBatch", func() error {
				_, err := topic().SubscribeBatch("s", func(context.Context, []eventbus.Event[Order]) error { return nil }, nil)
				return err
			}, eventbus.ErrInvalid},
			zeroCall{kind + " Name, EventType and Bus", func() error {
				if name, typ, b := topic().Name(), topic().EventType(), topic().Bus(); name != "" || typ != "" || b != nil {
					return fmt.Errorf("Name(), EventType(), Bus() = %q, %q, %p, want nothing", name, typ, b)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroAggregate checks that a nil Aggregate, and a zero one, which
// NewAggregate did not make, are refused with an error wrapping ErrInvalid:
// Load panicked on the missing store, and Execute on a zero Aggregate ran
// no attempt and returned an error saying that "0 attempts conflicted".
func TestZeroAggregate(t *testing.T) {
	ctx := context.Background()
	decide := func(int) ([]userV1, error) { return []userV1{{Name: "Ada"}}, nil }
	var calls []zeroCall
	for kind, a := range map[string]func() *eventbus.Aggregate[int, userV1]{
		"nil":  func() *eventbus.Aggregate[int, userV1] { return nil },
		"zero": func() *eventbus.Aggregate[int, userV1] { return new(eventbus.Aggregate[int, userV1]) },
	} {
		calls = append(calls,
			zeroCall{kind + " Load", func() error { _, err := a().Load(ctx, "user-1"); return err }, eventbus.ErrInvalid},
			zeroCall{kind + " Execute", func() error { _, err := a().Execute(ctx, "user-1", decide); return err }, eventbus.ErrInvalid},
			zeroCall{kind + " CacheStats", func() error {
				if hits, misses := a().CacheStats(); hits != 0 || misses != 0 {
					return fmt.Errorf("CacheStats() = %d, %d, want 0, 0", hits, misses)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// closingStore is a Store with a Close method, as both stores have.
type closingStore interface {
	eventbus.Store
	Close() error
}

// storeZeroCalls returns a call of each method of the Store that s returns,
// a nil or zero one: each must return or yield an error wrapping
// ErrInvalid. The calls share a minute's guard against a store that waits
// for good.
func storeZeroCalls(t *testing.T, kind string, s func() closingStore) []zeroCall {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e := eventbus.EventData{ID: eventbus.NewID(), Type: "user.created", Data: []byte(`{}`)}
	first := func(seq func(func(eventbus.RecordedEvent, error) bool)) error {
		for _, err := range seq {
			return err
		}
		return errors.New("no error yielded")
	}
	return []zeroCall{
		{kind + " Append", func() error { _, err := s().Append(ctx, "s", eventbus.Any, e); return err }, eventbus.ErrInvalid},
		{kind + " AppendMulti", func() error {
			_, err := s().AppendMulti(ctx, eventbus.StreamAppend{Stream: "s", Expected: eventbus.Any, Events: []eventbus.EventData{e}})
			return err
		}, eventbus.ErrInvalid},
		{kind + " Delete", func() error { return s().Delete(ctx, "s", eventbus.Any) }, eventbus.ErrInvalid},
		{kind + " Tombstone", func() error { return s().Tombstone(ctx, "s", eventbus.Any) }, eventbus.ErrInvalid},
		{kind + " SetStreamMetadata", func() error {
			return s().SetStreamMetadata(ctx, "s", eventbus.StreamMetadata{MaxCount: 1})
		}, eventbus.ErrInvalid},
		{kind + " StreamInfo", func() error { _, err := s().StreamInfo(ctx, "s"); return err }, eventbus.ErrInvalid},
		{kind + " ReadStream", func() error { return first(s().ReadStream(ctx, "s", nil)) }, eventbus.ErrInvalid},
		{kind + " ReadAll", func() error { return first(s().ReadAll(ctx, nil)) }, eventbus.ErrInvalid},
		{kind + " Subscribe", func() error { return first(s().Subscribe(ctx, nil)) }, eventbus.ErrInvalid},
		{kind + " Close", func() error { return s().Close() }, eventbus.ErrInvalid},
	}
}

// TestZeroMemoryStore checks that a nil MemoryStore, and a zero one, which
// NewMemoryStore did not make, are refused with an error wrapping
// ErrInvalid: every method panicked on a nil MemoryStore, Tombstone and
// SetStreamMetadata on a zero one's nil map, its appends failed with
// ErrTooLarge, its Subscribe waited for events that could never come, and
// its other methods took it for an empty store.
func TestZeroMemoryStore(t *testing.T) {
	testZero(t, append(
		storeZeroCalls(t, "nil", func() closingStore { return (*eventbus.MemoryStore)(nil) }),
		storeZeroCalls(t, "zero", func() closingStore { return new(eventbus.MemoryStore) })...,
	))
}

// TestZeroFileStore checks that a nil FileStore, and a zero one, which
// OpenFileStore did not make, are refused with an error wrapping
// ErrInvalid, and that their Stats are zero: every method panicked on a
// nil FileStore; on a zero one Delete, Tombstone and SetStreamMetadata
// waited for good for a committer that does not run, Close panicked
// closing its nil channel, its appends failed with ErrTooLarge, and its
// other methods took it for an empty store.
func TestZeroFileStore(t *testing.T) {
	var calls []zeroCall
	for kind, s := range map[string]func() *eventbus.FileStore{
		"nil":  func() *eventbus.FileStore { return nil },
		"zero": func() *eventbus.FileStore { return new(eventbus.FileStore) },
	} {
		calls = append(calls, storeZeroCalls(t, kind, func() closingStore { return s() })...)
		calls = append(calls,
			zeroCall{kind + " Verify", func() error { return s().Verify(context.Background()) }, eventbus.ErrInvalid},
			zeroCall{kind + " Stats", func() error {
				if diff := cmp.Diff(eventbus.FileStoreStats{}, s().Stats()); diff != "" {
					return fmt.Errorf("Stats() (-want +got):\n%s", diff)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroDurable checks that a nil Durable, and a zero one, which
// SubscribeDurable did not make, are refused with an error wrapping
// ErrInvalid, and have no name and a checkpoint of 0: every method
// panicked on a nil Durable, Checkpoint and WaitFor on a zero one, and
// its Stop and Rebuild waited for good for their turn on its nil channel.
func TestZeroDurable(t *testing.T) {
	// A guard against a Stop or Rebuild that waits for good.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var calls []zeroCall
	for kind, d := range map[string]func() *eventbus.Durable{
		"nil":  func() *eventbus.Durable { return nil },
		"zero": func() *eventbus.Durable { return new(eventbus.Durable) },
	} {
		calls = append(calls,
			zeroCall{kind + " WaitFor", func() error { return d().WaitFor(ctx, 1) }, eventbus.ErrInvalid},
			zeroCall{kind + " Stop", func() error { return d().Stop(ctx) }, eventbus.ErrInvalid},
			zeroCall{kind + " Rebuild", func() error { return d().Rebuild(ctx, nil) }, eventbus.ErrInvalid},
			zeroCall{kind + " Err", func() error { return d().Err() }, eventbus.ErrInvalid},
			zeroCall{kind + " Name and Checkpoint", func() error {
				if name, pos := d().Name(), d().Checkpoint(); name != "" || pos != 0 {
					return fmt.Errorf("Name(), Checkpoint() = %q, %d, want \"\", 0", name, pos)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroStoreProcessed checks that a nil StoreProcessed is refused with
// an error wrapping ErrInvalid, as a zero one and one over a nil store
// are: both methods panicked on it.
func TestZeroStoreProcessed(t *testing.T) {
	ctx := context.Background()
	k := eventbus.IdempotencyKey{Subscription: "s", ID: eventbus.NewID()}
	var calls []zeroCall
	for kind, p := range map[string]func() *eventbus.StoreProcessed{
		"nil":            func() *eventbus.StoreProcessed { return nil },
		"zero":           func() *eventbus.StoreProcessed { return new(eventbus.StoreProcessed) },
		"over nil store": func() *eventbus.StoreProcessed { return eventbus.NewStoreProcessed(nil) },
	} {
		calls = append(calls,
			zeroCall{kind + " Processed", func() error { _, err := p().Processed(ctx, k); return err }, eventbus.ErrInvalid},
			zeroCall{kind + " MarkProcessed", func() error { return p().MarkProcessed(ctx, k) }, eventbus.ErrInvalid},
		)
	}
	testZero(t, calls)
}

// TestZeroStoreTopic checks that a nil StoreTopic, and a zero one, which
// NewStoreTopic did not make, are refused with an error wrapping
// ErrInvalid that says so: both methods panicked on a nil StoreTopic, and
// on a zero one they failed for a nil registry, or for a durable
// subscription with a nil bus, which the caller never gave. Neither has a
// name, event type, bus or store.
func TestZeroStoreTopic(t *testing.T) {
	ctx := context.Background()
	var calls []zeroCall
	for kind, topic := range map[string]func() *eventbus.StoreTopic[userV1]{
		"nil":  func() *eventbus.StoreTopic[userV1] { return nil },
		"zero": func() *eventbus.StoreTopic[userV1] { return new(eventbus.StoreTopic[userV1]) },
	} {
		notMade := func(err error) error {
			if err != nil && !strings.Contains(err.Error(), "not made by NewStoreTopic") {
				return fmt.Errorf("%v, which does not say that NewStoreTopic did not make the StoreTopic", err)
			}
			return err
		}
		calls = append(calls,
			zeroCall{kind + " Publish", func() error { _, err := topic().Publish(ctx, userV1{}); return notMade(err) }, eventbus.ErrInvalid},
			zeroCall{kind + " PublishBatch", func() error {
				_, err := topic().PublishBatch(ctx, []userV1{{}})
				return notMade(err)
			}, eventbus.ErrInvalid},
			zeroCall{kind + " Subscribe", func() error {
				_, err := topic().Subscribe(ctx, "s", func(context.Context, eventbus.Event[userV1]) error { return nil }, nil)
				return notMade(err)
			}, eventbus.ErrInvalid},
			zeroCall{kind + " SubscribeBatch", func() error {
				_, err := topic().SubscribeBatch(ctx, "s", func(context.Context, []eventbus.Event[userV1]) error { return nil }, nil)
				return notMade(err)
			}, eventbus.ErrInvalid},
			zeroCall{kind + " Name, EventType, Bus and Store", func() error {
				if name, typ, b, s := topic().Name(), topic().EventType(), topic().Bus(), topic().Store(); name != "" || typ != "" || b != nil || s != nil {
					return fmt.Errorf("Name(), EventType(), Bus(), Store() = %q, %q, %p, %v, want nothing", name, typ, b, s)
				}
				return nil
			}, nil},
		)
	}
	testZero(t, calls)
}

// TestZeroErrors checks that the methods of a nil pointer of each error
// type the package exports read it as the zero value, as BatchError's do,
// and that a handler's typed nil of one is dead-lettered as its own error:
// Error and Unwrap panicked on a nil *PanicError, *HandlerError,
// *UndeliveredError and *CorruptionError, and Error on a nil
// *WrongExpectedVersionError, so the retry policy's errors.Is walk of a
// handler's typed nil turned it into a *PanicError of a nil dereference.
func TestZeroErrors(t *testing.T) {
	type unwrapper interface {
		error
		Unwrap() error
	}
	for _, tc := range []struct {
		name      string
		nil, zero error
	}{
		{"PanicError", (*eventbus.PanicError)(nil), &eventbus.PanicError{}},
		{"HandlerError", (*eventbus.HandlerError)(nil), &eventbus.HandlerError{}},
		{"UndeliveredError", (*eventbus.UndeliveredError)(nil), &eventbus.UndeliveredError{}},
		{"WrongExpectedVersionError", (*eventbus.WrongExpectedVersionError)(nil), &eventbus.WrongExpectedVersionError{}},
		{"CorruptionError", (*eventbus.CorruptionError)(nil), &eventbus.CorruptionError{}},
		{"BatchError", (*eventbus.BatchError)(nil), &eventbus.BatchError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("nil *%s panicked: %v", tc.name, r)
				}
			}()
			if got, want := tc.nil.Error(), tc.zero.Error(); got != want {
				t.Errorf("nil *%s: Error() = %q, want %q", tc.name, got, want)
			}
			if u, ok := tc.nil.(unwrapper); ok {
				if got, want := u.Unwrap(), tc.zero.(unwrapper).Unwrap(); got != want {
					t.Errorf("nil *%s: Unwrap() = %v, want %v", tc.name, got, want)
				}
			}
		})
	}
	t.Run("returned by a handler", func(t *testing.T) {
		for name, mode := range map[string]eventbus.Mode{"Sync": eventbus.Sync, "Async": eventbus.Async} {
			b := newBus(t, &eventbus.Options{Mode: mode})
			topic := newTopic[Order](t, b, "orders", nil)
			var typedNil *eventbus.HandlerError
			subscribe(t, topic, "s", func(context.Context, eventbus.Event[Order]) error {
				return typedNil
			}, nil)
			_ = topic.Publish(context.Background(), Order{Key: "k"})
			require.NoError(t, b.Flush(context.Background()))
			for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
				if dl.Err != error(typedNil) {
					t.Errorf("%s: dead letter's Err = %v, want the handler's typed nil *HandlerError", name, dl.Err)
				}
			}
			if n := b.DeadLetters().Len(); n != 1 {
				t.Errorf("%s: %d dead letters, want 1", name, n)
			}
		}
	})
}

// TestZeroIDUnmarshalText checks that UnmarshalText on a nil *ID returns
// an error wrapping ErrInvalid, as it does for bad text, instead of
// panicking on the nil pointer as it did for good text.
func TestZeroIDUnmarshalText(t *testing.T) {
	testZero(t, []zeroCall{
		{"nil UnmarshalText", func() error {
			text, err := eventbus.NewID().MarshalText()
			require.NoError(t, err)
			return (*eventbus.ID)(nil).UnmarshalText(text)
		}, eventbus.ErrInvalid},
	})
}
