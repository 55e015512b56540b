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
