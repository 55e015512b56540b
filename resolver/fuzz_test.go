package resolver

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/shortnames"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// FuzzResolve checks that Resolve never panics, fails only with the
// documented errors, returns only pullable candidates on the intended host,
// and makes the decisions containers/image makes: the same rule, the same
// candidates in the same order, a refusal where it would contact nothing.
// Without -fuzz it runs the seeds only.
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
		err0 := err
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
		if shortnames.IsShortName(image) {
			// rulesConf's only unqualified-search registry completes it, as
			// CRI-O's shortnames.Resolve does; this can differ from the
			// docker normalisation ("0_0.0/0" is docker.io/0_0.0/0 here,
			// while ParseDockerRef takes "0_0.0" for a host).
			if named, err = reference.ParseDockerRef("docker.io/" + image); err != nil {
				if err0 == nil {
					t.Fatalf("Resolve(%q) succeeded, but docker.io/%s is no reference", image, image)
				}
				return
			}
		}
		var ours string
		if reg := rs.match(named.Name()); reg != nil {
			ours = reg.Prefix
		}
		lib, err := sysregistriesv2.FindRegistry(sys, named.Name())
		if err != nil {
			t.Fatal(err)
		}
		var libPrefix string
		if lib != nil {
			libPrefix = lib.Prefix
		}
		if libPrefix != ours {
			t.Fatalf("%s: library matches %q, we match %q", named.Name(), libPrefix, ours)
		}
		// The pull decisions: the same candidates in the same order, or a
		// refusal where the library would contact nothing.
		want, libErr := libraryCandidates(sys, named)
		var got []string
		if res != nil {
			for _, c := range res.Candidates {
				got = append(got, c.Ref.String())
			}
		}
		if (libErr != nil) != (err0 != nil) || !slices.Equal(got, want) {
			t.Fatalf("%s: we try %q (error %v), the library %q (error %v)", named, got, err0, want, libErr)
		}
	})
}
