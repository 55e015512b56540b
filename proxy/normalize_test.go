package proxy

import (
	"fmt"
	"strings"
	"testing"
)

// FuzzNames: whatever a caller sends as an image name, normalisation does
// not panic, and repoOf (the cheap string form used on the hot path) agrees
// with the parsed repository of every name normalize accepts.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"nginx", "nginx:1.27", "library/nginx", "docker.io/library/nginx:latest",
		"localhost:5000/a/b:c", "127.0.0.1:5000/mirror/gcr.io/x/y:t",
		"gcr.io/x/y@sha256:" + strings.Repeat("a", 64), "nginx:1@sha256:" + strings.Repeat("b", 64),
		"sha256:" + strings.Repeat("c", 64), strings.Repeat("d", 64), "", ":", "@", "a:b:c", "UPPER",
		"[::1]:5000/x:y", "host:99999/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, image string) {
		named, ok := normalize(image)
		if !ok {
			return
		}
		if got := repoOf(named.String()); got != named.Name() {
			t.Fatalf("repoOf(%q) = %q, want %q", named.String(), got, named.Name())
		}
	})
}

func TestNamesCache(t *testing.T) {
	var n nameCache
	named, ok := n.normalize("nginx:1.27")
	if !ok || named.String() != "docker.io/library/nginx:1.27" {
		t.Fatalf("normalize(nginx:1.27) = %v, %v", named, ok)
	}
	id := strings.Repeat("a", 64)
	if _, ok := n.normalize(id); ok {
		t.Fatal("a bare image id is not a reference")
	}
	// Answers come from the cache: plant other ones and get them back. (An
	// entry is replaced only where its alias part is stale: normal forms
	// do not change.)
	n = nameCache{}
	planted, _ := normalize("example.test/planted:1")
	n.put("nginx:1.27", &nameEntry{named: planted, name: planted.String()})
	n.put(id, &nameEntry{named: planted, name: planted.String()})
	for _, image := range []string{"nginx:1.27", id} {
		if got, ok := n.normalize(image); !ok || got != planted {
			t.Errorf("normalize(%q) = %v, %v: not served from the cache", image, got, ok)
		}
	}
	for i := range 3 * namesCacheSize {
		n.normalize(fmt.Sprintf("app%d:%d", i, i))
		if size := n.size(); size > namesCacheSize {
			t.Fatalf("cache holds %d names, bound %d", size, namesCacheSize)
		}
	}
}

// size counts the names the cache holds.
func (c *nameCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.dirty)
	if r := c.read.Load(); r != nil {
		n += len(*r)
	}
	return n
}

// TestNamesCacheMovesToRead: a name asked about again and again ends up in
// the map read without the lock, and a replaced entry follows it there.
func TestNamesCacheMovesToRead(t *testing.T) {
	var n nameCache
	inRead := func(image string) *nameEntry {
		if r := n.read.Load(); r != nil {
			return (*r)[image]
		}
		return nil
	}
	for range 10 {
		n.normalize("nginx:1.27")
	}
	first := inRead("nginx:1.27")
	if first == nil {
		t.Fatal("nginx:1.27 is still not in the lock-free map after 10 lookups")
	}
	replaced := &nameEntry{named: first.named, name: first.name, looked: true, gen: 7}
	n.put("nginx:1.27", replaced)
	fresh := func(e *nameEntry) bool { return e.looked && e.gen == 7 }
	for range 10 {
		if e := n.entry("nginx:1.27", fresh); e != replaced {
			t.Fatalf("entry = %+v, want the replacement", e)
		}
	}
	if inRead("nginx:1.27") != replaced {
		t.Error("the replacement is still not in the lock-free map after 10 lookups")
	}
}
