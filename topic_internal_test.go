package eventbus

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"
)

// TestNumberingSkipsStoppedQueue publishes to two subscriptions while the
// first one's intake is stopped but it is still listed, as a publisher
// can find it while it is being unsubscribed: the stopped queue counts no
// events, so the events must still get distinct IDs.
func TestNumberingSkipsStoppedQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := New(&Options{Workers: 1})
		require.NoError(t, err)
		defer b.Close()
		topic, err := NewTopic[int](b, "numbers", nil)
		require.NoError(t, err)
		noop := func(context.Context, Event[int]) error { return nil }
		_, err = topic.Subscribe("first", noop, nil)
		require.NoError(t, err)
		var ids []ID
		_, err = topic.Subscribe("second", func(_ context.Context, e Event[int]) error { ids = append(ids, e.ID); return nil }, nil)
		require.NoError(t, err)
		(*topic.subs.Load())[0].stopIntake()

		ctx := context.Background()
		for i := range 3 {
			require.NoError(t, topic.Publish(ctx, i))
		}
		require.NoError(t, b.Flush(ctx))
		require.Len(t, ids, 3)
		require.NotEqual(t, ids[0], ids[1])
		require.NotEqual(t, ids[1], ids[2])
	})
}
