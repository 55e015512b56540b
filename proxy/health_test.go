package proxy

import (
	"testing"
	"time"
)

func TestHealthBreaker(t *testing.T) {
	now := time.Unix(1000, 0)
	var changes []string
	h := newHealth(30*time.Second, func(m string, ok bool) {
		s := "down"
		if ok {
			s = "up"
		}
		changes = append(changes, m+" "+s)
	})
	h.now = func() time.Time { return now }

	if !h.allow("a") {
		t.Fatal("an unknown mirror must be allowed")
	}
	h.failure("a")
	if h.allow("a") {
		t.Fatal("a failed mirror must be held back during the cool-down")
	}
	if !h.allow("b") {
		t.Fatal("one mirror's failure must not hold back another")
	}

	now = now.Add(31 * time.Second)
	if !h.allow("a") {
		t.Fatal("after the cool-down one trial is allowed")
	}
	if h.allow("a") {
		t.Fatal("only one trial at a time")
	}
	h.release("a") // the trial's caller went away
	if !h.allow("a") {
		t.Fatal("a released trial lets the next pull try")
	}
	h.failure("a") // trial failed: another cool-down
	if h.allow("a") {
		t.Fatal("a failed trial re-opens the breaker")
	}
	now = now.Add(31 * time.Second)
	if !h.allow("a") {
		t.Fatal("second trial")
	}
	h.success("a")
	for range 2 {
		if !h.allow("a") {
			t.Fatal("a recovered mirror is tried by every pull")
		}
	}
	want := []string{"a down", "a up"}
	if len(changes) != len(want) || changes[0] != want[0] || changes[1] != want[1] {
		t.Errorf("state changes = %v, want %v", changes, want)
	}
}

func TestHealthDisabled(t *testing.T) {
	h := newHealth(0, func(string, bool) { t.Error("no state changes when disabled") })
	h.failure("a")
	if !h.allow("a") {
		t.Error("cool-down 0 disables the breaker")
	}
}

func TestHealthHeard(t *testing.T) {
	now := time.Unix(1000, 0)
	h := newHealth(30*time.Second, func(string, bool) {})
	h.now = func() time.Time { return now }
	if h.heardWithin("a", time.Minute) {
		t.Fatal("a mirror never heard from")
	}
	h.success("a")
	h.heard("b")
	now = now.Add(59 * time.Second)
	if !h.heardWithin("a", time.Minute) || !h.heardWithin("b", time.Minute) {
		t.Fatal("a pull and a probe answer both count as hearing from a mirror")
	}
	if h.heardWithin("a", 0) {
		t.Fatal("a zero window never trusts")
	}
	now = now.Add(2 * time.Second)
	if h.heardWithin("a", time.Minute) {
		t.Fatal("heard longer ago than the window")
	}
	h.heard("a")
	h.failure("a")
	if h.heardWithin("a", time.Minute) {
		t.Fatal("a failure forgets the last hit")
	}
	h.heard("b")
	h.missed("b")
	if h.heardWithin("b", time.Minute) {
		t.Fatal("a miss forgets the last hit")
	}
}
