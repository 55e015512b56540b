package proxy

import (
	"sync"
	"time"
)

// recency remembers which mirrors last had what was asked of them (served a
// pull, or their probe found the manifest), and when. A mirror heard from
// recently is pulled from at once, with its probe alongside; any other is
// probed first (see mirrorGate).
type recency struct {
	now func() time.Time

	mu sync.Mutex
	at map[string]time.Time
}

func newRecency(now func() time.Time) *recency {
	return &recency{now: now, at: map[string]time.Time{}}
}

// heard records that mirror had what was asked.
func (r *recency) heard(mirror string) {
	r.mu.Lock()
	r.at[mirror] = r.now()
	r.mu.Unlock()
}

// forget records that mirror failed, or answered without what was asked
// (not found, credentials refused): up, perhaps, but not to be trusted
// blindly with the next pull.
func (r *recency) forget(mirror string) {
	r.mu.Lock()
	delete(r.at, mirror)
	r.mu.Unlock()
}

// within reports whether mirror was last heard from within d, with no miss
// or failure since.
func (r *recency) within(mirror string, d time.Duration) bool {
	if d <= 0 {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.at[mirror]
	return ok && r.now().Sub(at) < d
}
