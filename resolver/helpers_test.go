package resolver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
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

// libraryCandidates is what containers/image would contact to pull named,
// in order (docker_image_src.go newImageSource): FindRegistry on the
// repository name, PullSourcesFromReference, and each source dropped when
// FindRegistry on its own name is blocked (docker_client.go). An error means
// a pull that fails before any request, or contacts nothing.
func libraryCandidates(sys *types.SystemContext, named reference.Named) ([]string, error) {
	reg, err := sysregistriesv2.FindRegistry(sys, named.Name())
	if err != nil {
		return nil, err
	}
	if reg == nil {
		return []string{named.String()}, nil
	}
	sources, err := reg.PullSourcesFromReference(named)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sources {
		other, err := sysregistriesv2.FindRegistry(sys, s.Reference.Name())
		if err != nil {
			return nil, err
		}
		if other != nil && other.Blocked {
			continue
		}
		out = append(out, s.Reference.String())
	}
	if len(out) == 0 {
		return nil, errNothingToContact
	}
	return out, nil
}

var errNothingToContact = errors.New("every candidate is blocked")
