package proxy

import (
	"slices"
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	now := time.Unix(1000, 0)
	var changes []string
	b := newBreaker(30*time.Second, func() time.Time { return now }, func(m string, ok bool) {
		s := "down"
		if ok {
			s = "up"
		}
		changes = append(changes, m+" "+s)
	})

	if !b.allow("a") {
		t.Fatal("an unknown mirror must be allowed")
	}
	b.failure("a")
	if !b.held("a") || b.held("b") {
		t.Fatal("held must tell the failed mirror, and only it")
	}
	if b.allow("a") {
		t.Fatal("a failed mirror must be held back during the cool-down")
	}
	if !b.allow("b") {
		t.Fatal("one mirror's failure must not hold back another")
	}

	now = now.Add(31 * time.Second)
	if !b.allow("a") {
		t.Fatal("after the cool-down one trial is allowed")
	}
	if b.allow("a") {
		t.Fatal("only one trial at a time")
	}
	b.release("a") // the trial's caller went away
	if !b.allow("a") {
		t.Fatal("a released trial lets the next pull try")
	}
	b.failure("a") // trial failed: another cool-down
	if b.allow("a") {
		t.Fatal("a failed trial re-opens the breaker")
	}
	now = now.Add(31 * time.Second)
	if !b.allow("a") {
		t.Fatal("second trial")
	}
	b.success("a")
	for range 2 {
		if !b.allow("a") {
			t.Fatal("a recovered mirror is tried by every pull")
		}
	}
	if want := []string{"a down", "a up"}; !slices.Equal(changes, want) {
		t.Errorf("state changes = %v, want %v", changes, want)
	}
}

func TestBreakerDisabled(t *testing.T) {
	b := newBreaker(0, time.Now, func(string, bool) { t.Error("no state changes when disabled") })
	b.failure("a")
	if !b.allow("a") {
		t.Error("cool-down 0 disables the breaker")
	}
}
