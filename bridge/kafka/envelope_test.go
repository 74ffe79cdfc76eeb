package kafka_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/seed-a6f1faae/eventbus/bridge/kafka"
)

// Letter is a payload long enough for a registry with CompressAbove to
// compress.
type Letter struct{ Key, Text string }

func (Letter) EventType() string     { return "letter" }
func (l Letter) AggregateID() string { return l.Key }

// TestEnvelopeOverKafka takes an event through Kafka, forwarded from a bus
// and relayed from a store, into a bus fed by a Consumer: the handler gets
// the payload (compressed on the wire), key, correlation ID, traceparent
// and metadata as published, and the original ID and causation ID in
// kafka.event-id and kafka.causation-id, as the README promises; the
// record carries them in the headers that the package doc names.
func TestEnvelopeOverKafka(t *testing.T) {
	brokers, _, ctx := setup(t, "forwarded", "relayed")
	reg, err := eventbus.NewRegistry(&eventbus.RegistryOptions{CompressAbove: 64})
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.Register[Letter](reg, nil); err != nil {
		t.Fatal(err)
	}
	letter := Letter{Key: "n1", Text: strings.Repeat("a letter that compresses well. ", 20)}
	md := eventbus.Metadata{"tenant": "t1", eventbus.TraceparentKey: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	p := newProducer(t, reg, brokers)

	// Forwarded: published by a handler, so that it has a causation ID.
	src := newBus(t, &eventbus.Options{Mode: eventbus.Sync})
	letters, err := eventbus.NewTopic[Letter](src, "letters", nil)
	if err != nil {
		t.Fatal(err)
	}
	triggers, err := eventbus.NewTopic[Letter](src, "triggers", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kafka.Forward(p, letters, "forwarded", nil); err != nil {
		t.Fatal(err)
	}
	var forwarded eventbus.Header
	if _, err := letters.Subscribe("record", func(_ context.Context, e eventbus.Event[Letter]) error {
		forwarded = e.Header
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := triggers.Subscribe("letter", func(ctx context.Context, e eventbus.Event[Letter]) error {
		return letters.Publish(ctx, letter, eventbus.WithMetadata(md))
	}, nil); err != nil {
		t.Fatal(err)
	}
	if err := triggers.Publish(ctx, Letter{Key: "n1"}, eventbus.WithCorrelationID(eventbus.NewID())); err != nil {
		t.Fatal(err)
	}
	if forwarded.CausationID.IsZero() || forwarded.CorrelationID == forwarded.ID {
		t.Fatalf("the forwarded event's causation %v, correlation %v: want a handler's", forwarded.CausationID, forwarded.CorrelationID)
	}

	// Relayed: appended to a store with the same envelope.
	store := newStore(t)
	ed, err := reg.Encode(letter)
	if err != nil {
		t.Fatal(err)
	}
	ed.ID, ed.CorrelationID, ed.CausationID, ed.Metadata = eventbus.NewID(), eventbus.NewID(), eventbus.NewID(), md
	if _, err := store.Append(ctx, "n1", eventbus.Any, ed); err != nil {
		t.Fatal(err)
	}
	relay, err := kafka.NewRelay(store, p, &kafka.RelayOptions{Name: "letters", Topic: "relayed"})
	if err != nil {
		t.Fatal(err)
	}
	relayErr, stopRelay := startRun(ctx, relay)
	defer stopRelay()
	relayed := eventbus.Header{ID: ed.ID, Key: "n1", CorrelationID: ed.CorrelationID, CausationID: ed.CausationID, Metadata: md}

	for _, tc := range []struct {
		topic string
		sent  eventbus.Header
	}{{"forwarded", forwarded}, {"relayed", relayed}} {
		t.Run(tc.topic, func(t *testing.T) {
			r := readOne(t, ctx, brokers, tc.topic)
			headers := make(map[string]string)
			for _, h := range r.Headers {
				headers[h.Key] = string(h.Value)
			}
			wantHeaders := map[string]string{
				"eventbus-id":             tc.sent.ID.String(),
				"eventbus-type":           "letter",
				"eventbus-schema-version": "1",
				"eventbus-encoding":       "deflate",
				"eventbus-correlation-id": tc.sent.CorrelationID.String(),
				"eventbus-causation-id":   tc.sent.CausationID.String(),
				"traceparent":             md[eventbus.TraceparentKey],
				"eventbus-md-tenant":      "t1",
			}
			if diff := cmp.Diff(wantHeaders, headers); diff != "" || string(r.Key) != "n1" {
				t.Errorf("record key %q, headers (-want +got):\n%s", r.Key, diff)
			}
			got := consumeOne(t, ctx, brokers, reg, tc.topic)
			want := eventbus.Header{Key: "n1", CorrelationID: tc.sent.CorrelationID, Metadata: eventbus.Metadata{
				"tenant":                  "t1",
				eventbus.TraceparentKey:   md[eventbus.TraceparentKey],
				kafka.MetadataEventID:     tc.sent.ID.String(),
				kafka.MetadataCausationID: tc.sent.CausationID.String(),
				kafka.MetadataTopic:       tc.topic,
				kafka.MetadataPartition:   strconv.Itoa(int(r.Partition)),
				kafka.MetadataOffset:      strconv.FormatInt(r.Offset, 10),
			}}
			if got.Payload != letter {
				t.Errorf("payload %+v, want %+v", got.Payload, letter)
			}
			gotHeader := eventbus.Header{Key: got.Key, CorrelationID: got.CorrelationID, Metadata: got.Metadata}
			if diff := cmp.Diff(want, gotHeader); diff != "" {
				t.Errorf("consumed event's envelope (-want +got):\n%s", diff)
			}
		})
	}
	stopRelay()
	<-relayErr
}

// consumeOne consumes the Kafka topic into a bus of its own until its
// first event is handled, and returns that event.
func consumeOne(t *testing.T, ctx context.Context, brokers []string, reg *eventbus.Registry, topic string) eventbus.Event[Letter] {
	t.Helper()
	bus := newBus(t, nil)
	letters, err := eventbus.NewTopic[Letter](bus, "letters", nil)
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan eventbus.Event[Letter], 1)
	if _, err := letters.Subscribe("record", func(_ context.Context, e eventbus.Event[Letter]) error {
		select {
		case handled <- e:
		default:
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	cons, err := kafka.NewConsumer(bus, reg, &kafka.ConsumerOptions{Brokers: brokers, Group: "g-" + topic})
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.Route(cons, topic, letters); err != nil {
		t.Fatal(err)
	}
	runErr, stop := startRun(ctx, cons)
	defer stop()
	var e eventbus.Event[Letter]
	select {
	case e = <-handled:
	case err := <-runErr:
		t.Fatalf("Run() = %v before the event was handled", err)
	case <-ctx.Done():
		t.Fatalf("the event was not handled: %v", ctx.Err())
	}
	stop()
	if err := <-runErr; err != nil {
		t.Fatalf("Run() = %v, want nil", err)
	}
	return e
}
