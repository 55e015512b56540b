package proxy

import (
	"testing"
	"time"
)

func TestMirrorState(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := New(nil, nil, nil, WithCooldown(time.Minute), WithProbeOverlap(5*time.Minute), withProber(mapProber{}))
	s.gate.breaker.now = func() time.Time { return now }
	s.gate.recent.now = func() time.Time { return now }

	if st := s.MirrorState("m"); st.HeldBack || !st.LastHit.IsZero() || !st.ProbeFirst {
		t.Errorf("untried mirror: %+v, want not held back, no hit, probe first", st)
	}

	s.gate.recent.heard("m")
	if st := s.MirrorState("m"); !st.LastHit.Equal(now) || st.ProbeFirst {
		t.Errorf("after a hit: %+v, want LastHit %v and no probe first", st, now)
	}

	s.gate.breaker.failure("m")
	s.gate.recent.forget("m")
	st := s.MirrorState("m")
	if !st.HeldBack || !st.HeldUntil.Equal(now.Add(time.Minute)) || st.Trial || !st.LastHit.IsZero() || !st.ProbeFirst {
		t.Errorf("after a failure: %+v, want held back until %v, no hit, probe first", st, now.Add(time.Minute))
	}

	now = now.Add(2 * time.Minute) // the cool-down is over: the next pull may try it
	if st := s.MirrorState("m"); st.HeldBack {
		t.Errorf("after the cool-down: %+v, want not held back", st)
	}
	if !s.gate.breaker.allow("m") {
		t.Fatal("the breaker refused the trial after the cool-down")
	}
	if st := s.MirrorState("m"); !st.HeldBack || !st.Trial {
		t.Errorf("during the trial: %+v, want held back with a trial in flight", st)
	}
	s.gate.breaker.success("m")
	if st := s.MirrorState("m"); st.HeldBack || st.Trial || !st.HeldUntil.IsZero() {
		t.Errorf("after the trial succeeded: %+v, want the zero breaker", st)
	}

	noProbe := New(nil, nil, nil)
	if st := noProbe.MirrorState("m"); st.ProbeFirst {
		t.Errorf("without a prober: %+v, want no probe first", st)
	}
}
