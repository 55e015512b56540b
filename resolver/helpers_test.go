package resolver

import (
	"os"
	"path/filepath"
	"testing"
)

// testDigest is a syntactically valid sha256 digest.
const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// confFiles writes a main registries.conf and drop-ins (name → content)
// into a fresh directory and returns the two paths for New.
func confFiles(t testing.TB, main string, dropIns map[string]string) (confPath, confDir string) {
	t.Helper()
	dir := t.TempDir()
	confPath = filepath.Join(dir, "registries.conf")
	confDir = filepath.Join(dir, "registries.conf.d")
	writeFile(t, confPath, main)
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range dropIns {
		writeFile(t, filepath.Join(confDir, name), content)
	}
	return confPath, confDir
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newTestResolver builds a Resolver from a main file and drop-ins.
func newTestResolver(t testing.TB, main string, dropIns map[string]string) *Resolver {
	t.Helper()
	r, err := New(confFiles(t, main, dropIns))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}
