package proxy

import (
	"sync"
	"time"
)

// health is a per-mirror circuit breaker: a mirror that failed is held back
// for a cool-down, so a dead mirror costs one failed attempt, not one per
// pull. When the cool-down has passed, one pull tries the mirror again
// (half-open): success closes the breaker, failure opens it for another
// cool-down.
//
// Only mirror faults open it (see mirrorFault): a cache miss or a refused
// credential says the mirror is up.
type health struct {
	cooldown time.Duration
	now      func() time.Time
	onChange func(mirror string, healthy bool)

	mu      sync.Mutex
	mirrors map[string]*mirrorState
	heardAt map[string]time.Time // when each mirror last had what was asked: served a pull, or a probe found it
}

type mirrorState struct {
	openUntil time.Time // zero: closed, the mirror is tried in order
	trial     bool      // a half-open trial is in flight
}

// DefaultCooldown is how long a failed mirror is held back.
const DefaultCooldown = 30 * time.Second

func newHealth(cooldown time.Duration, onChange func(string, bool)) *health {
	return &health{cooldown: cooldown, now: time.Now, onChange: onChange, mirrors: map[string]*mirrorState{}, heardAt: map[string]time.Time{}}
}

// allow reports whether mirror may be tried now. After the cool-down one
// caller at a time gets a trial; it must report back with success, failure
// or release.
func (h *health) allow(mirror string) bool {
	if h.cooldown <= 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.mirrors[mirror]
	if m == nil || m.openUntil.IsZero() {
		return true
	}
	if h.now().Before(m.openUntil) || m.trial {
		return false
	}
	m.trial = true
	return true
}

// success closes the breaker of mirror.
func (h *health) success(mirror string) {
	h.mu.Lock()
	m := h.mirrors[mirror]
	wasOpen := m != nil && !m.openUntil.IsZero()
	delete(h.mirrors, mirror)
	h.heardAt[mirror] = h.now()
	h.mu.Unlock()
	if wasOpen {
		h.onChange(mirror, true)
	}
}

// failure opens (or re-opens) the breaker of mirror for a cool-down.
func (h *health) failure(mirror string) {
	h.mu.Lock()
	delete(h.heardAt, mirror)
	if h.cooldown <= 0 {
		h.mu.Unlock()
		return
	}
	m := h.mirrors[mirror]
	if m == nil {
		m = &mirrorState{}
		h.mirrors[mirror] = m
	}
	wasClosed := m.openUntil.IsZero()
	m.openUntil = h.now().Add(h.cooldown)
	m.trial = false
	h.mu.Unlock()
	if wasClosed {
		h.onChange(mirror, false)
	}
}

// release ends a trial that said nothing about the mirror (the caller went
// away), so the next pull may try again.
func (h *health) release(mirror string) {
	h.mu.Lock()
	if m := h.mirrors[mirror]; m != nil {
		m.trial = false
	}
	h.mu.Unlock()
}

// heard records that mirror had what was asked (a probe found the manifest).
func (h *health) heard(mirror string) {
	h.mu.Lock()
	h.heardAt[mirror] = h.now()
	h.mu.Unlock()
}

// missed records that mirror answered without what was asked (not found,
// credentials refused): up, but not to be trusted blindly with the next pull.
func (h *health) missed(mirror string) {
	h.mu.Lock()
	delete(h.heardAt, mirror)
	h.mu.Unlock()
}

// heardWithin reports whether mirror last had what was asked within d, and
// has neither failed nor missed since.
func (h *health) heardWithin(mirror string, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.heardAt[mirror]
	return ok && h.now().Sub(at) < d
}
