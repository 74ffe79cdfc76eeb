package eventbus

import (
	"fmt"
	"reflect"
)

// RegisterUpcaster adds to r a function that turns the payload of one
// schema version of an event type into the next version. From and To must
// be registered (see [Register]) under the same event type name, To with
// the version after From's, so that chains have no gap and no cycle; there
// is one upcaster per version. [Decode] chains them to bring any old
// version up to the latest, and [LoadSnapshot] to bring a snapshot of an
// older version of a state type up to the one it loads.
//
// It returns an error wrapping [ErrUnknownEvent] if From or To is not
// registered, [ErrInvalid] if they are not consecutive versions of one
// event type or f is nil, and [ErrDuplicate] if that version has an
// upcaster already.
func RegisterUpcaster[From, To any](r *Registry, f func(From) (To, error)) error {
	from, to := reflect.TypeFor[From](), reflect.TypeFor[To]()
	if f == nil {
		return fmt.Errorf("%w: upcaster from %v to %v is nil", ErrInvalid, from, to)
	}
	if err := r.check("RegisterUpcaster"); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fe, te := r.byGo[from], r.byGo[to]
	switch {
	case fe == nil || te == nil:
		return fmt.Errorf("%w: upcaster from %v to %v: register both types first", ErrUnknownEvent, from, to)
	case fe.name != te.name:
		return fmt.Errorf("%w: upcaster from %v (%q) to %v (%q): not the same event type", ErrInvalid, from, fe.name, to, te.name)
	case te.version != fe.version+1:
		return fmt.Errorf("%w: upcaster for %q from version %d to %d: versions must be consecutive", ErrInvalid, fe.name, fe.version, te.version)
	}
	ev := r.byName[fe.name]
	if _, ok := ev.upcasters[fe.version]; ok {
		return fmt.Errorf("%w: %q has an upcaster from version %d already", ErrDuplicate, fe.name, fe.version)
	}
	ev.upcasters[fe.version] = func(v any) (_ any, err error) {
		defer recovered(&err)
		return f(v.(From))
	}
	return nil
}
