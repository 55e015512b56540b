package resolver

import (
	"errors"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// FuzzResolve checks that Resolve never panics, fails only with the
// documented errors, returns only pullable candidates on the intended host,
// and picks the same rule as containers/image (but for the port case
// documented in match.go). Without -fuzz it runs the seeds only.
func FuzzResolve(f *testing.F) {
	for _, seed := range []string{
		"nginx", "nginx:1.27", "library/nginx:latest", "docker.io/library/nginx@" + testDigest,
		"nginx:1.27@" + testDigest, "busybox", "busybox-extra", "alpine", "alpine:3.20",
		"quay.io/a/b:t", "quay.io/a/b@" + testDigest, "foo.example.com/app:1", "a.b.example.com/x@" + testDigest,
		"foo.example.com:5000/app", "blocked.example.com/x", "gcr.io/p/i:1", "gcr.io/p/i@" + testDigest,
		"registry.k8s.io/pause:3.10", "localhost:5000/x", "localhost/x", "internal.corp/team/app",
		"mcr.microsoft.com/dotnet/runtime:8.0", "nvcr.io/nim/x:1", "ghcr.io/o/r", "index.docker.io/x/y",
		"", "::", "NGINX", "nginx@sha256:abc", strings.Repeat("a", 300), "a/" + strings.Repeat("b/", 200),
		"docker.io/library", "docker.io/library:1", "example.com:5000/x:y",
	} {
		f.Add(seed)
	}
	confPath, confDir := confFiles(f, rulesConf, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		f.Fatal(err)
	}
	rs := r.rules.Load()
	sys := &types.SystemContext{SystemRegistriesConfPath: confPath, SystemRegistriesConfDirPath: confDir}

	f.Fuzz(func(t *testing.T, image string) {
		res, err := r.Resolve(image)
		if err != nil {
			var be *BlockedError
			if !errors.Is(err, ErrInvalidReference) && !errors.As(err, &be) {
				t.Fatalf("Resolve(%q): unexpected error type %T: %v", image, err, err)
			}
		} else {
			checkCandidates(t, res)
		}

		if len(image) > maxReferenceLength {
			return
		}
		named, err := reference.ParseDockerRef(image)
		if err != nil {
			return
		}
		var ours string
		if reg := rs.match(named.Name()); reg != nil {
			ours = reg.Prefix
		}
		lib, err := sysregistriesv2.FindRegistry(sys, named.Name())
		if err != nil {
			t.Fatal(err)
		}
		if lib == nil || lib.Prefix == ours {
			if lib == nil && ours != "" {
				t.Fatalf("%s: we match %q, the library nothing", named.Name(), ours)
			}
			return
		}
		// The one accepted difference: a host-only library prefix followed
		// by a port; then we fall back to a shorter rule or none.
		if strings.Contains(lib.Prefix, "/") || !strings.Contains(named.Name(), lib.Prefix[1:]+":") && !strings.HasPrefix(named.Name(), lib.Prefix+":") {
			t.Fatalf("%s: library matches %q, we match %q", named.Name(), lib.Prefix, ours)
		}
		if len(ours) >= len(lib.Prefix) {
			t.Fatalf("%s: library matches %q, we match the longer %q", named.Name(), lib.Prefix, ours)
		}
	})
}
