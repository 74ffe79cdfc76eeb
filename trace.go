package eventbus

import (
	"context"
	"fmt"
	"maps"
)

// TraceparentKey is the metadata key of an event's W3C trace context.
// Publish does not check a value set with [WithMetadata], or one that came
// from outside (a Kafka record); a malformed one stays in the event's
// metadata, but the handler's context carries no trace context from it:
// [Traceparent] returns "" and the events the handler publishes do not
// inherit it, so that the trace restarts, as W3C Trace Context asks.
const TraceparentKey = "traceparent"

// WithTraceparent returns a context that carries traceparent, a W3C trace
// context header ("00-<trace-id>-<parent-id>-<flags>"), such as the one of
// an incoming HTTP request. A later version's, which W3C Trace Context asks
// parsers to accept, has the same fields and may go on after a '-' with
// fields of its own (printable ASCII, no space); it is carried on as it
// is. Publish copies it into the event's metadata under [TraceparentKey];
// the handler's context carries it on, so events the handler publishes
// carry it too, and [Traceparent] reads it back. It returns an error wrapping
// [ErrInvalid] for a malformed value or a nil ctx.
func WithTraceparent(ctx context.Context, traceparent string) (context.Context, error) {
	if err := checkContext(ctx, "WithTraceparent"); err != nil {
		return ctx, err
	}
	if err := checkTraceparent(traceparent); err != nil {
		return ctx, err
	}
	l := lineage{Metadata: Metadata{TraceparentKey: traceparent}}
	if p, ok := parent(ctx); ok {
		l.ID, l.CorrelationID, l.handler = p.ID, p.CorrelationID, p.handler
	}
	return context.WithValue(ctx, parentKey{}, &l), nil
}

// Traceparent returns the W3C trace context carried by ctx: in a handler,
// the one of the event being handled; elsewhere, the one set with
// WithTraceparent. It returns "" if there is none, if the event's is
// malformed (see [TraceparentKey]), or if ctx is nil.
func Traceparent(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	if p, ok := parent(ctx); ok {
		return p.traceparent()
	}
	return ""
}

// traceparent returns the trace context of the lineage's event, or "" if
// it has none or a malformed one.
func (l *lineage) traceparent() string { return traceparentOf(l.Metadata) }

// traceparentOf returns the trace context in an event's metadata md, or ""
// if it has none or a malformed one.
func traceparentOf(md Metadata) string {
	tp := md[TraceparentKey]
	if tp == "" || checkTraceparent(tp) != nil {
		return ""
	}
	return tp
}

// inherit gives metadata md the trace context of the parent lineage p, unless
// it has its own; it copies md rather than changing the caller's map.
func inherit(md Metadata, p *lineage) Metadata {
	tp := p.traceparent()
	if tp == "" || md[TraceparentKey] != "" {
		return md
	}
	out := make(Metadata, len(md)+1)
	maps.Copy(out, md)
	out[TraceparentKey] = tp
	return out
}

// checkTraceparent validates a W3C traceparent: the version-00 form, of 55
// characters, or that of a later version, which the specification asks
// parsers to accept: version 00's fields, then the end or a '-' and the
// later version's own fields, whose form is not known yet.
func checkTraceparent(s string) error {
	bad := func(why string) error {
		if len(s) > 64 {
			// The start of a long s is enough: a value from outside may be
			// a hostile megabyte, which %q makes four.
			return fmt.Errorf("%w: traceparent %.64q... (%d bytes): %s", ErrInvalid, s, len(s), why)
		}
		return fmt.Errorf("%w: traceparent %q: %s", ErrInvalid, s, why)
	}
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return bad(`want "00-<32 hex>-<16 hex>-<2 hex>"`)
	}
	if s[:2] == "ff" {
		return bad("version ff is invalid")
	}
	if len(s) > 55 {
		if s[:2] == "00" {
			return bad("version 00 has 55 characters")
		}
		if s[55] != '-' {
			return bad("a later version's fields must follow the flags after a '-'")
		}
		for i := 56; i < len(s); i++ {
			if c := s[i]; c < '!' || c > '~' {
				return bad(fmt.Sprintf("%q at %d is not printable ASCII or is a space", c, i))
			}
		}
	}
	allZero := func(h string) bool {
		for i := range len(h) {
			if h[i] != '0' {
				return false
			}
		}
		return true
	}
	for i := range 55 {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return bad(fmt.Sprintf("%q at %d is not lower-case hex", c, i))
		}
	}
	if allZero(s[3:35]) || allZero(s[36:52]) {
		return bad("trace-id and parent-id must not be all zeros")
	}
	return nil
}
