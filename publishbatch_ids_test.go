package eventbus_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// TestPublishBatchFanOutIDsUnique publishes a batch of more than one run
// (PublishBatch stamps 32 events at a time on its stack) to two
// subscriptions, where the publisher numbers the events itself: every event
// must get an ID of its own, and be its own correlation ID.
func TestPublishBatchFanOutIDsUnique(t *testing.T) {
	b := newBus(t, nil)
	topic := newTopic[int](t, b, "ints", nil)
	var mu sync.Mutex
	seen := map[eventbus.ID]int{}
	h := func(_ context.Context, e eventbus.Event[int]) error {
		mu.Lock()
		defer mu.Unlock()
		if e.CorrelationID != e.ID {
			t.Errorf("event %d: correlation ID %v, want its ID %v", e.Payload, e.CorrelationID, e.ID)
		}
		if p, ok := seen[e.ID]; ok && p != e.Payload {
			t.Errorf("events %d and %d share the ID %v", p, e.Payload, e.ID)
		}
		seen[e.ID] = e.Payload
		return nil
	}
	subscribe(t, topic, "a", h, nil)
	subscribe(t, topic, "b", h, nil)
	payloads := make([]int, 100)
	for i := range payloads {
		payloads[i] = i
	}
	n, err := topic.PublishBatch(context.Background(), payloads)
	require.NoError(t, err)
	require.Equal(t, len(payloads), n)
	require.NoError(t, b.Flush(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, len(payloads))
}
