package proxy

import "time"

// MirrorState is what the pull path knows of one mirror at a moment: its
// breaker and its recency. It is read for the daemon's status report.
type MirrorState struct {
	// HeldBack is set while the breaker holds the mirror back after a
	// failure; HeldUntil is when the cool-down ends. After it, the next
	// pull tries the mirror once (Trial is set while that try runs).
	HeldBack  bool
	HeldUntil time.Time
	Trial     bool
	// LastHit is when the mirror last had what was asked (served a pull or
	// its probe found the manifest); zero when it never did, or missed or
	// failed since.
	LastHit time.Time
	// ProbeFirst: the next pull from it is probed before the runtime is
	// asked (with the probe on and no hit within the probe overlap);
	// otherwise it is pulled from at once, probed alongside.
	ProbeFirst bool
}

// MirrorState reports the state of mirror (a configured location). It only
// reads: a mirror never tried has the zero breaker and no hit.
func (s *Server) MirrorState(mirror string) MirrorState {
	g := s.gate
	var st MirrorState
	g.breaker.mu.Lock()
	if b := g.breaker.mirrors[mirror]; b != nil && !b.openUntil.IsZero() {
		st.HeldBack = g.breaker.now().Before(b.openUntil) || b.trial
		st.HeldUntil = b.openUntil
		st.Trial = b.trial
	}
	g.breaker.mu.Unlock()
	g.recent.mu.Lock()
	st.LastHit = g.recent.at[mirror]
	g.recent.mu.Unlock()
	st.ProbeFirst = g.prober != nil && !g.recent.within(mirror, g.overlap)
	return st
}
