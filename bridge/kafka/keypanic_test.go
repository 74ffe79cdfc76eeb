package kafka_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// Parcel's key method panics on a parcel with no items, as a method that
// takes its first item without looking does.
type Parcel struct{ Items []string }

func (Parcel) EventType() string     { return "parcel" }
func (p Parcel) AggregateID() string { return p.Items[0] }

// TestConsumerKeyMethodPanics consumes a record whose payload makes its
// type's key method panic, which Publish runs, followed by a good one of
// the same key: the record is a bad one, dead-lettered to the
// DeadLetterTopic or, without one, stopping Run with an error wrapping
// eventbus.ErrInvalid and the *eventbus.PanicError, in either mode. The
// panic went up Run's goroutine and ended the process, at every run, as a
// codec's panic on the same bytes does not.
func TestConsumerKeyMethodPanics(t *testing.T) {
	brokers, _, ctx := setup(t, "parcels", "dead-async", "dead-sync")
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Parcel](reg, nil); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, value := range []string{`{"Items":[]}`, `{"Items":["a"]}`} {
		r := &kgo.Record{Topic: "parcels", Key: []byte("k"), Value: []byte(value), Headers: []kgo.RecordHeader{
			{Key: "eventbus-id", Value: []byte(eventbus.NewID().String())},
			{Key: "eventbus-type", Value: []byte("parcel")},
		}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	eachConsumerCase(t, func(t *testing.T, mode eventbus.Mode, group, deadLetter string) {
		testConsumerKeyMethodPanics(t, ctx, brokers, reg, mode, group, deadLetter)
	})
}

func testConsumerKeyMethodPanics(t *testing.T, ctx context.Context, brokers []string, reg *eventbus.Registry, mode eventbus.Mode, group, deadLetter string) {
	bus := newBus(t, &eventbus.Options{Mode: mode})
	parcels, err := eventbus.NewTopic[Parcel](bus, "parcels", nil)
	if err != nil {
		t.Fatal(err)
	}
	good := make(chan struct{})
	if _, err := parcels.Subscribe("ship", func(context.Context, eventbus.Event[Parcel]) error {
		close(good)
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: group, DeadLetterTopic: deadLetter})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, "parcels", parcels); err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, cons)
	defer stop()

	if deadLetter == "" {
		select {
		case err := <-runErr:
			var panicked *eventbus.PanicError
			if !errors.Is(err, eventbus.ErrInvalid) || !errors.As(err, &panicked) {
				t.Errorf("Run() = %v, want an error wrapping eventbus.ErrInvalid and a *eventbus.PanicError", err)
			}
		case <-good:
			t.Error("the record after the bad one was handled")
		case <-ctx.Done():
			t.Fatal("Run did not stop at the bad record")
		}
		return
	}
	handledThenStop(t, ctx, good, runErr, stop, "the record after the bad one")
	if n := countRecords(t, ctx, brokers, deadLetter); n != 1 {
		t.Errorf("the dead-letter topic holds %d records, want 1", n)
	}
	checkCommittedAll(t, ctx, brokers, group, "parcels")
}
