package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-a6f1faae/eventbus"
)

// fate says what a model subscription's handler does with event n on its
// attempts: fail some times, panic, call runtime.Goexit, or fail for good.
// handled reports whether the event ends handled (with 3 attempts).
func fate(sub string, n int) (failures int, how string, handled bool) {
	switch (n*7 + len(sub)) % 9 {
	case 1:
		return 1, "error", true
	case 2:
		return 2, "error", true
	case 3:
		return 3, "error", false
	case 4:
		return 1, "panic", true
	case 5:
		return 1, "goexit", false
	}
	return 0, "", true
}

// TestBusModel runs random sequences of Publish, TryPublish, Subscribe,
// Unsubscribe and Flush, with handlers that fail, panic, call Goexit and
// publish, and checks the bus against a model: per key, each subscription
// handles the events it was subscribed for in publish order, those it gives
// up on are dead-lettered, Metrics agree, and the end (Shutdown or Close)
// accounts for every event.
func TestBusModel(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runBusModel(t, seed) })
		})
	}
}

type modelSub struct {
	sub      *eventbus.Subscription
	gone     bool
	expected map[string][]int // key -> N of events queued for it, in order
}

func runBusModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := newBus(t, &eventbus.Options{
		Workers:   1 + rng.IntN(3),
		QueueSize: 1 + rng.IntN(3),
		Retry:     eventbus.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second},
	})
	topic := newTopic[Order](t, b, "orders", nil)
	children := newTopic[Order](t, b, "children", nil)
	var (
		mu       sync.Mutex
		handled  = map[string]map[string][]int{} // sub -> key -> N
		attempts = map[string]map[int]int{}      // sub -> N -> attempts so far
		kids     = map[eventbus.ID]eventbus.ID{} // child causation -> parent correlation
		parents  = map[eventbus.ID]eventbus.ID{} // event ID -> correlation ID
	)
	subscribe(t, children, "kids", func(_ context.Context, e eventbus.Event[Order]) error {
		mu.Lock()
		defer mu.Unlock()
		kids[e.CausationID] = e.CorrelationID
		return nil
	}, nil)
	subs := map[string]*modelSub{}
	newSub := func(name string) {
		subs[name] = &modelSub{expected: map[string][]int{}}
		mu.Lock()
		handled[name] = map[string][]int{}
		attempts[name] = map[int]int{}
		mu.Unlock()
		subs[name].sub = subscribe(t, topic, name, func(ctx context.Context, e eventbus.Event[Order]) error {
			n := e.Payload.N
			mu.Lock()
			attempts[name][n]++
			a := attempts[name][n]
			mu.Unlock()
			if n%4 == 0 && a == 1 {
				// A handler publishing to its own topic's sibling with a full
				// queue never waits; the child is linked to e.
				if err := children.Publish(ctx, Order{Key: "c", N: n}); err != nil {
					return eventbus.Permanent(errors.New("child not published")) // not matching ErrClosed
				}
			}
			failures, how, _ := fate(name, n)
			if a <= failures {
				switch how {
				case "panic":
					panic("boom")
				case "goexit":
					runtime.Goexit()
				}
				return errors.New("flaky")
			}
			mu.Lock()
			handled[name][e.Key] = append(handled[name][e.Key], n)
			parents[e.ID] = e.CorrelationID
			mu.Unlock()
			return nil
		}, &eventbus.SubscriptionOptions{Workers: 1 + rng.IntN(3)})
	}
	live := func() []string {
		var out []string
		for name, s := range subs {
			if !s.gone {
				out = append(out, name)
			}
		}
		slices.Sort(out)
		return out
	}
	// check compares what each subscription handled with the model; all
	// says that every event is finished.
	check := func(all bool) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		for name, s := range subs {
			for key, want := range s.expected {
				ok := []int{}
				for _, n := range want {
					if _, _, h := fate(name, n); h {
						ok = append(ok, n)
					}
				}
				got := append([]int{}, handled[name][key]...)
				if !all {
					require.LessOrEqual(t, len(got), len(ok))
					ok = ok[:len(got)]
				}
				require.Equal(t, ok, got, "subscription %s, key %s", name, key)
			}
		}
	}
	ctx := context.Background()
	n := 0
	keys := []string{"a", "b", "c", ""}
	newSub("s0")
	for range 60 {
		switch op := rng.IntN(20); {
		case op < 12:
			n++
			key := keys[rng.IntN(len(keys))]
			sent := true
			if op < 3 {
				ok, err := topic.TryPublish(ctx, Order{Key: key, N: n})
				require.NoError(t, err)
				sent = ok
			} else {
				require.NoError(t, topic.Publish(ctx, Order{Key: key, N: n}))
			}
			if sent && key != "" {
				for _, name := range live() {
					subs[name].expected[key] = append(subs[name].expected[key], n)
				}
			}
		case op < 14:
			newSub(fmt.Sprint("s", len(subs)))
		case op < 15:
			if l := live(); len(l) > 1 {
				s := subs[l[rng.IntN(len(l))]]
				s.gone = true
				require.NoError(t, s.sub.Unsubscribe(ctx))
			}
		default:
			require.NoError(t, b.Flush(ctx))
			check(true)
			m := b.Metrics()
			for _, sm := range m.Subscriptions {
				require.Equal(t, sm.Queued, sm.Handled+sm.DeadLettered+sm.Duplicates+sm.Pending, "%+v", sm)
				if sm.Topic == "orders" { // children published meanwhile are not waited for
					require.Zero(t, sm.Pending, "%+v", sm)
				}
			}
		}
		check(false)
	}
	var final error
	if rng.IntN(2) == 0 {
		require.NoError(t, b.Flush(ctx))
		check(true)
		require.NoError(t, b.Shutdown(ctx))
		check(true)
	} else {
		// Close abandons what is queued or waiting for a retry: counted,
		// dead-lettered with the cause ErrClosed, and nothing else.
		err := b.Close()
		final = err
		undelivered := 0
		if err != nil {
			var ue *eventbus.UndeliveredError
			require.ErrorAs(t, err, &ue)
			require.ErrorIs(t, err, eventbus.ErrClosed)
			undelivered = ue.Count
		}
		abandoned := 0
		for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
			if errors.Is(dl.Err, eventbus.ErrClosed) {
				abandoned++
			}
		}
		require.Equal(t, undelivered, abandoned)
		check(false)
	}
	require.Equal(t, final, b.Close(), "the first call's result")
	var dead uint64
	for _, sm := range b.Metrics().Subscriptions {
		require.Zero(t, sm.Pending, "%+v", sm)
		require.Equal(t, sm.Queued, sm.Handled+sm.DeadLettered+sm.Duplicates, "%+v", sm)
		dead += sm.DeadLettered
	}
	held := 0
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		if s := subs[dl.Subscription]; s == nil || !s.gone {
			held++
		}
	}
	require.EqualValues(t, dead, held, "dead letters of live subscriptions")
	mu.Lock()
	defer mu.Unlock()
	for cause, corr := range kids {
		if want, ok := parents[cause]; ok { // the parent may have been dead-lettered
			require.Equal(t, want, corr, "child of %v", cause)
		}
	}
}

// TestFanOutAllOrNothingUnderStress publishes from several goroutines with
// short deadlines and TryPublish into full queues of three subscriptions,
// while one subscription unsubscribes and the bus shuts down with a
// deadline. Every event Publish accepted reaches each remaining
// subscription once (handled or dead-lettered); no refused event reaches
// any.
func TestFanOutAllOrNothingUnderStress(t *testing.T) {
	for seed := range uint64(10) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runFanOutStress(t, seed) })
		})
	}
}

func runFanOutStress(t *testing.T, seed uint64) {
	const publishers, each = 4, 40
	b := newBus(t, &eventbus.Options{Workers: 2, QueueSize: 1})
	topic := newTopic[Order](t, b, "orders", nil)
	var mu sync.Mutex
	seen := map[string]map[int]int{} // sub -> N -> times handled
	var subs []*eventbus.Subscription
	for i := range 3 {
		name := fmt.Sprint("s", i)
		seen[name] = map[int]int{}
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		var rmu sync.Mutex
		subs = append(subs, subscribe(t, topic, name, func(ctx context.Context, e eventbus.Event[Order]) error {
			rmu.Lock()
			d := time.Duration(rng.IntN(3)) * time.Millisecond
			rmu.Unlock()
			time.Sleep(d) // work that takes time
			mu.Lock()
			seen[name][e.Payload.N]++
			mu.Unlock()
			return nil
		}, nil))
	}
	accepted := make([][]int, publishers)
	refused := make([][]int, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(100+p)))
			for i := range each {
				n := p*each + i
				key := fmt.Sprint("k", rng.IntN(3))
				var ok bool
				if rng.IntN(3) == 0 {
					var err error
					ok, err = topic.TryPublish(context.Background(), Order{Key: key, N: n})
					if err != nil && !errors.Is(err, eventbus.ErrClosed) {
						t.Errorf("TryPublish() = %v, want nil or ErrClosed", err)
					}
				} else {
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(30))*time.Millisecond)
					err := topic.Publish(ctx, Order{Key: key, N: n})
					cancel()
					ok = err == nil
					if !ok && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, eventbus.ErrClosed) {
						t.Errorf("Publish() = %v, want nil, DeadlineExceeded or ErrClosed", err)
					}
				}
				if ok {
					accepted[p] = append(accepted[p], n)
				} else {
					refused[p] = append(refused[p], n)
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	short, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	unsubErr := subs[2].Unsubscribe(short)
	cancel()
	if unsubErr != nil {
		var ue *eventbus.UndeliveredError
		require.ErrorAs(t, unsubErr, &ue)
	}
	time.Sleep(20 * time.Millisecond)
	short, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
	_ = b.Shutdown(short) // may leave events undelivered: they are dead letters
	cancel()
	wg.Wait()

	dead := map[string]map[int]int{}
	for dl := range b.DeadLetters().All(eventbus.DeadLetterFilter{}) {
		if dead[dl.Subscription] == nil {
			dead[dl.Subscription] = map[int]int{}
		}
		dead[dl.Subscription][dl.Payload().(Order).N]++
	}
	mu.Lock()
	defer mu.Unlock()
	for p := range publishers {
		for _, n := range refused[p] {
			for name := range seen {
				require.Zero(t, seen[name][n]+dead[name][n], "refused event %d reached %s", n, name)
			}
		}
		for _, n := range accepted[p] {
			for _, name := range []string{"s0", "s1"} {
				require.Equal(t, 1, seen[name][n]+dead[name][n], "accepted event %d in %s", n, name)
			}
			require.LessOrEqual(t, seen["s2"][n]+dead["s2"][n], 1, "accepted event %d in s2", n)
		}
	}
}
