//go:build e2e

package e2e

import (
	"context"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// pushedImage is what the runtime will report for a pushed image.
type pushedImage = testenv.Pushed

// Repository paths inside the mirror registry, as "mirror locations" of registries.conf.
// mirrorLoc("m1") is e.g. "127.0.0.1:41234/m1".
func (h *harness) mirrorLoc(path string) string { return h.mirror.host + "/" + path }

// pushFixtures pushes every image the tests use. Names under the mirror registry are
// <mirror path>/<repository path>; names under the source registry are the repository path,
// pulled by containerd as source.test/<repository path>. Where the mirror and the source hold
// the same name they hold different images, so the image id tells which one served a pull.
func (h *harness) pushFixtures() error {
	M, S := h.mirror.host+"/", h.source.host+"/"
	steps := []struct {
		refs []string
		img  func() (v1.Image, error)
		idx  bool
	}{
		// smoke test straight against containerd
		{refs: []string{M + "m1/e2e/smoke:v1"}},
		{refs: []string{S + "e2e/smoke:v1"}},
		// tag pull served by the mirror
		{refs: []string{M + "m1/e2e/mirrored:v1"}},
		{refs: []string{S + "e2e/mirrored:v1"}},
		// mirror order
		{refs: []string{M + "m1/e2e/order:v1"}},
		{refs: []string{M + "m2/e2e/order:v1"}},
		{refs: []string{S + "e2e/order:v1"}},
		// fallback: second mirror, dead mirror, source
		{refs: []string{M + "m2/e2e/fallback-m2:v1"}},
		{refs: []string{S + "e2e/fallback-m2:v1"}},
		{refs: []string{M + "m1/e2e/fallback-dead:v1"}},
		{refs: []string{S + "e2e/fallback-src:v1"}},
		// pull-from-mirror: "dig" is digest-only, "tag" is tag-only
		{refs: []string{M + "dig/e2e/policy:v1"}},
		{refs: []string{M + "tag/e2e/policy:v1"}},
		{refs: []string{S + "e2e/policy:v1"}},
		{refs: []string{M + "tag/e2e/policy-d:only-tag"}},
		{refs: []string{M + "dig/e2e/policy-d:both", M + "tag/e2e/policy-d:both"}},
		// blocked sources
		{refs: []string{M + "m1/blocked/present:v1"}},
		{refs: []string{S + "blocked/absent:v1"}},
		// image kinds and names
		{refs: []string{M + "m1/e2e/multiarch:v1"}, idx: true},
		{refs: []string{M + "m1/e2e/user-uid:v1"}, img: userImage("1002")},
		{refs: []string{M + "m1/e2e/user-name:v1"}, img: userImage("www-data")},
		{refs: []string{M + "m1/e2e/user-uid-group:v1"}, img: userImage("1003:users")},
		{refs: []string{M + "m1/e2e/user-name-group:v1"}, img: userImage("www-data:users")},
		{refs: []string{M + "m1/e2e/tags:1", M + "m1/e2e/tags:2", M + "m1/e2e/tags:3"}},
		{refs: []string{M + "m1/e2e/twin-a:v1", M + "m1/e2e/twin-b:v1"}},
		{refs: []string{M + "hub/library/e2e-short:latest"}},
		{refs: []string{M + "m1/e2e/digest:v1"}},
		// removal, restart, metrics, no rule, concurrency
		{refs: []string{M + "m1/e2e/rmi-name:v1"}},
		{refs: []string{M + "m1/e2e/rmi-id:v1"}},
		{refs: []string{M + "m1/e2e/restart:v1"}},
		{refs: []string{M + "m1/e2e/metrics-m:v1"}},
		{refs: []string{S + "e2e/metrics-s:v1"}},
		{refs: []string{S + "e2e/norule:v1"}},
		{refs: []string{M + "m1/e2e/concurrent:v1"}},
		{refs: []string{M + "m1/e2e/reload:v1"}},
		{refs: []string{M + "m2/e2e/reload:v1"}},
	}
	for _, s := range steps {
		var (
			t   remote.Taggable
			err error
		)
		switch {
		case s.idx:
			t, err = multiArch()
		case s.img != nil:
			t, err = s.img()
		default:
			t, err = userImage("")()
		}
		if err != nil {
			return err
		}
		p, err := testenv.PushAs(context.Background(), t, s.refs...)
		if err != nil {
			return err
		}
		for _, r := range s.refs {
			h.pushed[r] = p
		}
	}
	return nil
}

// userImage returns a maker of a random one-layer image for linux/<host arch> with Config.User.
func userImage(user string) func() (v1.Image, error) {
	return func() (v1.Image, error) { return testenv.Random(1024, 1, testenv.Arch, testenv.User(user)) }
}

// multiArch is a Docker manifest list with a foreign platform first and the native one
// second, so the runtime has to pick by platform.
func multiArch() (v1.ImageIndex, error) {
	other := "arm64"
	if testenv.Arch == "arm64" {
		other = "amd64"
	}
	foreign, err := testenv.Random(1024, 1, other)
	if err != nil {
		return nil, err
	}
	native, err := testenv.Random(1024, 1, testenv.Arch)
	if err != nil {
		return nil, err
	}
	return testenv.Index(foreign, native)
}

// image returns what was pushed as ref ("M:" and "S:" prefixes stand for the mirror and the
// source registry), failing the test when it is unknown.
func (h *harness) image(ref string) testenv.Pushed {
	switch {
	case strings.HasPrefix(ref, "M:"):
		ref = h.mirror.host + "/" + ref[2:]
	case strings.HasPrefix(ref, "S:"):
		ref = h.source.host + "/" + ref[2:]
	}
	p, ok := h.pushed[ref]
	if !ok {
		panic("e2e: no fixture pushed as " + ref)
	}
	return p
}
