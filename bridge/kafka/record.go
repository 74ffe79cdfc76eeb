package kafka

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/seed-a6f1faae/eventbus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The record headers that carry an event's envelope. Metadata entries other
// than the traceparent travel as headers named headerMetadata plus their key.
const (
	headerID            = "eventbus-id"
	headerType          = "eventbus-type"
	headerSchemaVersion = "eventbus-schema-version"
	headerEncoding      = "eventbus-encoding"
	headerCorrelationID = "eventbus-correlation-id"
	headerCausationID   = "eventbus-causation-id"
	headerMetadata      = "eventbus-md-"
	headerError         = "eventbus-error"
)

// Metadata keys under which a consumed event carries what the bus cannot keep
// in its header: the bus gives every published event an ID of its own, and
// only a handler's context sets a causation ID.
const (
	// MetadataEventID is the ID of the event as published on the other side
	// of Kafka: the same for every delivery of one event, so it is what
	// [EventID] gives the Idempotency middleware.
	MetadataEventID = "kafka.event-id"
	// MetadataCausationID is the original event's causation ID, if any;
	// absent if it had none, also when its metadata held one from a
	// record it was consumed from before.
	MetadataCausationID = "kafka.causation-id"
	// MetadataTopic, MetadataPartition and MetadataOffset say where in Kafka
	// the record was read.
	MetadataTopic     = "kafka.topic"
	MetadataPartition = "kafka.partition"
	MetadataOffset    = "kafka.offset"
)

// EventID returns the ID that the event had before it crossed Kafka, or "" for
// an event that did not come from a [Consumer] and for a nil env. Give it to
// the Idempotency middleware as [eventbus.IdempotencyOptions].Key, so that a
// record delivered twice is handled once:
//
//	eventbus.Idempotency(&eventbus.IdempotencyOptions{Key: kafka.EventID})
//
// The middleware's in-memory record catches records delivered again to the
// same process, as long as its Capacity (10,000 keys unless set) covers the
// records handled since the last commit; after a crash, or on the
// partition's next owner, only an [eventbus.ProcessedStore] remembers. On
// the next owner, another process of the group, only one that the
// processes share does: [eventbus.NewStoreProcessed] over a FileStore
// keeps the record of one process, as the store is its own, so the next
// owner of a partition handles again the records that the last one
// handled after its last commit (when it crashed, lost the partition, or
// failed to commit it as it gave it up).
func EventID(env *eventbus.Envelope) string {
	if env == nil {
		return ""
	}
	return env.Metadata[MetadataEventID]
}

// newRecord returns e as a record of topic with key: the encoded payload as
// value, the envelope in headers. A payload that encodes to no bytes (which
// a store reads back as nil) has an empty value, not a null one: a record
// with a null value is a tombstone, which compaction takes for the deletion
// of its key's records before it, and connectors for a delete.
func newRecord(topic, key string, e *eventbus.EventData) *kgo.Record {
	h := make([]kgo.RecordHeader, 0, 6+len(e.Metadata))
	h = append(h,
		kgo.RecordHeader{Key: headerID, Value: []byte(e.ID.String())},
		kgo.RecordHeader{Key: headerType, Value: []byte(e.Type)},
		kgo.RecordHeader{Key: headerSchemaVersion, Value: strconv.AppendInt(nil, int64(max(e.SchemaVersion, 1)), 10)},
	)
	if e.Encoding != "" {
		h = append(h, kgo.RecordHeader{Key: headerEncoding, Value: []byte(e.Encoding)})
	}
	if !e.CorrelationID.IsZero() {
		h = append(h, kgo.RecordHeader{Key: headerCorrelationID, Value: []byte(e.CorrelationID.String())})
	}
	if !e.CausationID.IsZero() {
		h = append(h, kgo.RecordHeader{Key: headerCausationID, Value: []byte(e.CausationID.String())})
	}
	for k, v := range e.Metadata {
		if k != eventbus.TraceparentKey {
			k = headerMetadata + k
		}
		h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	value := e.Data
	if value == nil {
		value = []byte{}
	}
	r := &kgo.Record{Topic: topic, Value: value, Headers: h}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

// recordBatchOverhead is the size of a record batch with no records, as
// franz-go counts it against its batch limit: the batch's length prefix
// and header (base offset, length, leader epoch, magic, CRC, attributes,
// last offset delta, first and max timestamps, producer ID and epoch, base
// sequence) and the record count.
const recordBatchOverhead = 4 + 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4

// batchBytes returns the size of a record batch holding r alone, as franz-go
// counts it against its batch limit (kgo.ProducerBatchMaxBytes) before it
// knows the broker's produce version, and for versions 3 to 8; for versions
// 9 and later it counts 3 bytes less. A record larger than the limit fails
// before it is ever buffered.
func batchBytes(r *kgo.Record) int64 {
	n := 1 + // attributes
		kbin.VarlongLen(0) + // timestamp delta: the first record of its batch
		kbin.VarintLen(0) + // offset delta
		kbin.VarintLen(int32(len(r.Key))) + len(r.Key) +
		kbin.VarintLen(int32(len(r.Value))) + len(r.Value) +
		kbin.VarintLen(int32(len(r.Headers)))
	for _, h := range r.Headers {
		n += kbin.VarintLen(int32(len(h.Key))) + len(h.Key) + kbin.VarintLen(int32(len(h.Value))) + len(h.Value)
	}
	return recordBatchOverhead + int64(kbin.VarintLen(int32(n))) + int64(n)
}

// maxTypeLen and maxEncodingLen bound the headers of a record's type and
// encoding: longer ones name nothing the registry knows, and its error,
// which would quote them whole, quotes their start instead.
const (
	maxTypeLen     = 249 // the longest name of an event type
	maxEncodingLen = 32
)

// parseRecord returns the event that r carries and its key. It fails with an
// error wrapping eventbus.ErrInvalid for a record that no bridge produced.
func parseRecord(r *kgo.Record) (eventbus.EventData, string, error) {
	var e eventbus.EventData
	var err error
	for _, h := range r.Headers {
		switch k := h.Key; {
		case k == headerID:
			e.ID, err = eventbus.ParseID(string(h.Value))
		case k == headerType:
			if len(h.Value) > maxTypeLen {
				// The registry's error would quote it whole; no
				// registered type has so long a name.
				err = fmt.Errorf("%w: %.32q... (%d bytes)", eventbus.ErrUnknownEvent, h.Value, len(h.Value))
			}
			e.Type = string(h.Value)
		case k == headerSchemaVersion:
			if e.SchemaVersion, err = strconv.Atoi(string(h.Value)); err != nil {
				// strconv's error quotes the whole value, which a
				// foreign producer may have made any size.
				err = fmt.Errorf("%.32q: %w", h.Value, errors.Unwrap(err))
			}
		case k == headerEncoding:
			if len(h.Value) > maxEncodingLen {
				// As for the type: no encoding has so long a name.
				err = fmt.Errorf("unknown encoding %.32q... (%d bytes)", h.Value, len(h.Value))
			}
			e.Encoding = string(h.Value)
		case k == headerCorrelationID:
			e.CorrelationID, err = eventbus.ParseID(string(h.Value))
		case k == headerCausationID:
			e.CausationID, err = eventbus.ParseID(string(h.Value))
		case k == eventbus.TraceparentKey, strings.HasPrefix(k, headerMetadata):
			if e.Metadata == nil {
				e.Metadata = make(eventbus.Metadata, 4)
			}
			e.Metadata[strings.TrimPrefix(k, headerMetadata)] = string(h.Value)
		}
		if err != nil {
			return e, "", fmt.Errorf("%w: header %s of record %s/%d@%d: %w", eventbus.ErrInvalid, h.Key, r.Topic, r.Partition, r.Offset, err)
		}
	}
	if e.ID.IsZero() || e.Type == "" {
		return e, "", fmt.Errorf("%w: record %s/%d@%d has no %s or %s header", eventbus.ErrInvalid, r.Topic, r.Partition, r.Offset, headerID, headerType)
	}
	if len(r.Value) > 0 { // an empty payload is nil, as a store reads it back
		e.Data = r.Value
	}
	return e, string(r.Key), nil
}
