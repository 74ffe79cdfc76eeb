package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// Note is a pointer payload with no key method, so that the bus takes a
// nil one.
type Note struct{ Text string }

func (*Note) EventType() string { return "note" }

// TestForwardNilPayload forwards a nil pointer payload, which the bus
// takes: its event is dead-lettered at once, with an error wrapping
// eventbus.ErrInvalid, and nothing reaches Kafka. Its record, a JSON null,
// was written, for every Consumer to take for a bad record.
func TestForwardNilPayload(t *testing.T) {
	checkNoLeaks(t)
	brokers := cluster(t, "notes").ListenAddrs()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	reg, err := eventbus.NewRegistry(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[*Note](reg, nil); err != nil {
		t.Fatal(err)
	}
	bus := newBus(t, nil)
	notes, err := eventbus.NewTopic[*Note](bus, "notes", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, reg, brokers)
	if _, err := kafka.Forward(p, notes, "notes", &eventbus.SubscriptionOptions{
		Retry: &eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Millisecond},
	}); err != nil {
		t.Fatal(err)
	}
	if err := notes.Publish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := bus.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var dead []eventbus.DeadLetter
	for dl := range bus.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		dead = append(dead, dl)
	}
	if len(dead) != 1 || !errors.Is(dead[0].Err, eventbus.ErrInvalid) || dead[0].Attempt != 1 {
		t.Errorf("dead letters %v, want the nil payload's, after 1 attempt, with ErrInvalid", dead)
	}
	if n := countRecords(t, ctx, brokers, "notes"); n != 0 {
		t.Errorf("Kafka holds %d records, want none", n)
	}
}
