package eventbus

// broadcast wakes every goroutine waiting for a change of some state that a
// lock guards: a waiter takes the channel from wait under the lock, lets go
// of the lock and waits for the channel to close; a change calls notify
// under the lock. A channel is made only while someone waits. The zero
// value is ready to use.
type broadcast struct{ ch chan struct{} }

// wait returns a channel closed at the next notify. Callers hold the lock.
func (b *broadcast) wait() <-chan struct{} {
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// notify wakes the waiters. Callers hold the lock.
func (b *broadcast) notify() {
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
