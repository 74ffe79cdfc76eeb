package eventbustest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// spyTB is a testing.TB that records failures instead of failing the real
// test, so that tests can check that a helper fails, and how. Cleanup
// functions are kept until cleanup runs them, which the real test does at
// its end if the test did not.
type spyTB struct {
	testing.TB

	mu       sync.Mutex
	errs     []string
	fatal    bool
	cleanups []func()
}

func newSpy(t *testing.T) *spyTB {
	s := &spyTB{TB: t}
	t.Cleanup(s.cleanup)
	return s
}

func (s *spyTB) Helper() {}

func (s *spyTB) Errorf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

func (s *spyTB) Fatalf(format string, args ...any) {
	s.Errorf(format, args...)
	s.FailNow()
}

// FailNow ends the calling goroutine, as testing.T's does; call the helper
// under test through run.
func (s *spyTB) FailNow() {
	s.mu.Lock()
	s.fatal = true
	s.mu.Unlock()
	runtime.Goexit()
}

func (s *spyTB) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.errs) > 0 || s.fatal
}

func (s *spyTB) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// cleanup runs the cleanup functions registered so far, last first.
func (s *spyTB) cleanup() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// run calls f in a goroutine of its own, so that FailNow can end it, and
// waits for it.
func (s *spyTB) run(f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	<-done
}

// failures returns the messages of the failures reported so far.
func (s *spyTB) failures() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.errs, "\n")
}

// wantFailure fails t unless s failed with a message containing every one
// of parts.
func (s *spyTB) wantFailure(t *testing.T, parts ...string) {
	t.Helper()
	if !s.Failed() {
		t.Fatalf("the check passed; want it to fail")
	}
	msg := s.failures()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("failure message lacks %q:\n%s", p, msg)
		}
	}
}
