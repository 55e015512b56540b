package proxy

import (
	"testing"
	"time"
)

func TestRecency(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRecency(func() time.Time { return now })
	if r.within("a", time.Minute) {
		t.Fatal("a mirror never heard from")
	}
	r.heard("a")
	now = now.Add(59 * time.Second)
	if !r.within("a", time.Minute) {
		t.Fatal("heard within the window")
	}
	if r.within("a", 0) {
		t.Fatal("a zero window never trusts")
	}
	now = now.Add(2 * time.Second)
	if r.within("a", time.Minute) {
		t.Fatal("heard longer ago than the window")
	}
	r.heard("a")
	r.forget("a")
	if r.within("a", time.Minute) {
		t.Fatal("forget drops the last hit")
	}
}
