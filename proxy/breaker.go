package proxy

import (
	"sync"
	"time"
)

// breaker is a per-mirror circuit breaker: a mirror that failed is held back
// for a cool-down, so a dead mirror costs one failed attempt, not one per
// pull. When the cool-down has passed, one pull tries the mirror again
// (half-open): success closes the breaker, failure opens it for another
// cool-down.
//
// Protocol: allow, then exactly one of success, failure or release. The
// mirror gate keeps it (see mirrorGate.record); only mirror faults open it.
type breaker struct {
	cooldown time.Duration
	now      func() time.Time
	onChange func(mirror string, healthy bool)

	mu      sync.Mutex
	mirrors map[string]*breakerState
}

type breakerState struct {
	openUntil time.Time // zero: closed, the mirror is tried in order
	trial     bool      // a half-open trial is in flight
}

// DefaultCooldown is how long a failed mirror is held back.
const DefaultCooldown = 30 * time.Second

func newBreaker(cooldown time.Duration, now func() time.Time, onChange func(string, bool)) *breaker {
	return &breaker{cooldown: cooldown, now: now, onChange: onChange, mirrors: map[string]*breakerState{}}
}

// allow reports whether mirror may be tried now. After the cool-down one
// caller at a time gets a trial.
func (b *breaker) allow(mirror string) bool {
	if b.cooldown <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.mirrors[mirror]
	if m == nil || m.openUntil.IsZero() {
		return true
	}
	if b.now().Before(m.openUntil) || m.trial {
		return false
	}
	m.trial = true
	return true
}

// held reports whether mirror is held back now, without taking a trial:
// for callers that would only add a request of their own to a mirror the
// pulls stay away from.
func (b *breaker) held(mirror string) bool {
	if b.cooldown <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.mirrors[mirror]
	return m != nil && !m.openUntil.IsZero() && (b.now().Before(m.openUntil) || m.trial)
}

// success closes the breaker of mirror.
func (b *breaker) success(mirror string) {
	b.mu.Lock()
	m := b.mirrors[mirror]
	wasOpen := m != nil && !m.openUntil.IsZero()
	delete(b.mirrors, mirror)
	b.mu.Unlock()
	if wasOpen {
		b.onChange(mirror, true)
	}
}

// failure opens (or re-opens) the breaker of mirror for a cool-down.
func (b *breaker) failure(mirror string) {
	if b.cooldown <= 0 {
		return
	}
	b.mu.Lock()
	m := b.mirrors[mirror]
	if m == nil {
		m = &breakerState{}
		b.mirrors[mirror] = m
	}
	wasClosed := m.openUntil.IsZero()
	m.openUntil = b.now().Add(b.cooldown)
	m.trial = false
	b.mu.Unlock()
	if wasClosed {
		b.onChange(mirror, false)
	}
}

// release ends a trial that said nothing about the mirror's health (the
// caller went away, the mirror lacked the image), so the next pull may try.
func (b *breaker) release(mirror string) {
	b.mu.Lock()
	if m := b.mirrors[mirror]; m != nil {
		m.trial = false
	}
	b.mu.Unlock()
}
