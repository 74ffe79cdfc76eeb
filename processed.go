package eventbus

import (
	"context"
	"errors"
	"fmt"
)

// StoreProcessed is a [ProcessedStore] kept in a [Store], so that the
// [Idempotency] middleware remembers across restarts which events a
// subscription handled: with a [Durable] subscription, whose events are
// delivered again from the checkpoint after a restart, those handled before
// are skipped, but for one whose handler returned when the process died,
// before its record was saved, which runs again (see [Idempotency]). It
// records each event in a system stream of its own, "$processed-", the
// subscription, ':' and the event ID (or ":key:" and the business key,
// hashed if it is too long for a stream name or not UTF-8), so that
// Processed is one lookup. The record grows by one stream per event, for
// good: a store keeps every stream's state in memory (some 300 to 600
// bytes each, measured with both stores), deleting a stream does not free
// it, and under a FileStore's retention every new segment restates every
// stream, so retention cannot bound it. It suits subscriptions of up to
// some millions of events; beyond that, make handlers idempotent
// themselves. A [Durable.Rebuild] replays events that their records mark
// handled, so a subscription that may be rebuilt must not use it.
// Make one with [NewStoreProcessed]; it is safe for concurrent use. The
// methods of a nil StoreProcessed, or of one over a nil store, return an
// error wrapping [ErrInvalid].
type StoreProcessed struct {
	store Store
}

var _ ProcessedStore = (*StoreProcessed)(nil)

// NewStoreProcessed returns a StoreProcessed that keeps its records in s.
func NewStoreProcessed(s Store) *StoreProcessed { return &StoreProcessed{store: s} }

var errNilProcessedStore = fmt.Errorf("%w: nil StoreProcessed, or one over a nil store", ErrInvalid)

// processedStream returns the stream that records k: subscription names
// have no ':', so two keys' streams never meet.
func processedStream(k IdempotencyKey) string {
	if k.Key != "" {
		return systemStream(processedPrefix(k.Subscription)+"key:", k.Key)
	}
	return processedPrefix(k.Subscription) + k.ID.String()
}

// processedStreamPrefix is how the names of the streams of every record
// begin; [bookkeeping] skips them (the Kafka bridge's relay repeats it).
const processedStreamPrefix = "$processed-"

// processedPrefix is how the streams of every record of subscription sub
// begin, and those of no other subscription.
func processedPrefix(sub string) string { return processedStreamPrefix + sub + ":" }

// Processed implements [ProcessedStore.Processed].
func (p *StoreProcessed) Processed(ctx context.Context, k IdempotencyKey) (bool, error) {
	if p == nil || p.store == nil {
		return false, errNilProcessedStore
	}
	if err := checkContext(ctx, "Processed"); err != nil {
		return false, err // not for the store to find out, perhaps by a panic
	}
	info, err := p.store.StreamInfo(ctx, processedStream(k))
	return info.Exists, err
}

// MarkProcessed implements [ProcessedStore.MarkProcessed]. It records k
// even if ctx is cancelled, as it is when the bus closes just as the handler
// returns: the handler's effect has happened, and a record lost then would
// let it happen again after a restart.
func (p *StoreProcessed) MarkProcessed(ctx context.Context, k IdempotencyKey) error {
	if p == nil || p.store == nil {
		return errNilProcessedStore
	}
	if err := checkContext(ctx, "MarkProcessed"); err != nil {
		return err
	}
	_, err := p.store.Append(context.WithoutCancel(ctx), processedStream(k), NoStream, EventData{ID: NewID(), Type: "eventbus.processed"})
	if errors.Is(err, ErrWrongExpectedVersion) {
		return nil // recorded before: a redriven event
	}
	return err
}
