package proxy

import (
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
	// Answers come from the cache: plant other ones and get them back.
	planted, _ := normalize("example.test/planted:1")
	n.m["nginx:1.27"] = planted
	n.m[id] = planted
	for _, image := range []string{"nginx:1.27", id} {
		if got, ok := n.normalize(image); !ok || got != planted {
			t.Errorf("normalize(%q) = %v, %v: not served from the cache", image, got, ok)
		}
	}
	for i := range namesCacheSize + 10 {
		n.normalize("app" + strings.Repeat("x", i%7) + ":" + string(rune('a'+i%26)))
	}
	if len(n.m) > namesCacheSize {
		t.Errorf("cache holds %d names, bound %d", len(n.m), namesCacheSize)
	}
}
