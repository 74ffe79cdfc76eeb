package kafka

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seed-a6f1faae/eventbus"
)

// FuzzParseRecord feeds records with arbitrary headers to the decoder of
// what comes off the wire: it must never panic, and whatever it accepts
// must survive encoding and decoding again unchanged.
func FuzzParseRecord(f *testing.F) {
	id := eventbus.NewID().String()
	f.Add(id, "order.placed", "1", "", id, id, "region", "eu", []byte(`{"n":1}`), "k")
	f.Add("", "", "x", "deflate", "not-an-id", "", "", "", []byte(nil), "")
	f.Add(id, "t", "-7", "", "", "not-an-id", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", []byte{0xff}, "")
	f.Add(id, "ping", "1", "", id, id, "", "", []byte(nil), "k") // a null value
	f.Fuzz(func(t *testing.T, id, typ, version, encoding, corr, cause, mdKey, mdValue string, value []byte, key string) {
		r := &kgo.Record{Topic: "t", Key: []byte(key), Value: value, Headers: []kgo.RecordHeader{
			{Key: headerID, Value: []byte(id)},
			{Key: headerType, Value: []byte(typ)},
			{Key: headerSchemaVersion, Value: []byte(version)},
			{Key: headerEncoding, Value: []byte(encoding)},
			{Key: headerCorrelationID, Value: []byte(corr)},
			{Key: headerCausationID, Value: []byte(cause)},
			{Key: headerMetadata + mdKey, Value: []byte(mdValue)},
		}}
		e, k, err := parseRecord(r)
		if err != nil {
			return
		}
		again, k2, err := parseRecord(newRecord("t", k, &e))
		if err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
		if e.SchemaVersion < 1 { // encoding writes at least version 1
			e.SchemaVersion = 1
		}
		if diff := cmp.Diff(e, again); diff != "" || k != k2 {
			t.Fatalf("round trip (-first +second):\n%s\nkeys %q %q", diff, k, k2)
		}
	})
}
