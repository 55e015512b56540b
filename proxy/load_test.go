package proxy

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestLoad: 1,000 concurrent ImageStatus and 100 concurrent pulls of 10
// distinct tags through the proxy: no errors, each tag pulled once, and no
// goroutine left behind.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	h := newHarness(t)
	for i := range 10 {
		h.rt.Publish(fmt.Sprintf("mirror-a.test/hub/library/app:%d", i), fmt.Sprintf("app-%d", i))
	}
	h.rt.Publish(mirrorTag, "y")
	id := h.mustPull(origTag)
	baseline := runtime.NumGoroutine()

	// Hold the runtime's pulls until every caller has joined, so the
	// de-duplication is what keeps the count at one per tag.
	h.rt.Block = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 1100)
	for i := range 100 {
		wg.Go(func() {
			_, err := h.pull(fmt.Sprintf("app:%d", i%10), nil)
			errs <- err
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.allWaiters() < 100 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for range 1000 {
		wg.Go(func() {
			img := h.status(origTag)
			if img.GetId() != id {
				errs <- fmt.Errorf("ImageStatus = %v", img)
			}
		})
	}
	close(h.rt.Block)
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if err != nil {
			n++
			if n <= 5 {
				t.Error(err)
			}
		}
	}
	if n > 0 {
		t.Fatalf("%d calls failed", n)
	}

	pulls := map[string]int{}
	for _, ref := range h.rt.PulledRefs() {
		pulls[ref]++
	}
	for i := range 10 {
		ref := fmt.Sprintf("mirror-a.test/hub/library/app:%d", i)
		if pulls[ref] != 1 {
			t.Errorf("%s pulled %d times, want 1", ref, pulls[ref])
		}
	}

	// Goroutines settle back (gRPC keeps a few per connection; allow slack,
	// not growth with the number of calls).
	var now int
	for range 100 {
		now = runtime.NumGoroutine()
		if now <= baseline+10 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if now > baseline+10 {
		t.Errorf("goroutines: %d after the load, %d before", now, baseline)
	}
}

func (h *harness) allWaiters() int {
	h.srv.flights.mu.Lock()
	defer h.srv.flights.mu.Unlock()
	n := 0
	for _, fl := range h.srv.flights.m {
		n += fl.waiters
	}
	return n
}
