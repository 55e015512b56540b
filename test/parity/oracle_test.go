package parity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// outcome is one pull decision: the references contacted, in order, or why
// none is.
type outcome struct {
	refs []string
	fail string // "", "blocked" (nothing may be contacted) or "invalid" (refused as an invalid reference: a rule cannot rewrite the name, or a short name is ambiguous)
}

func (o outcome) String() string {
	if o.fail != "" {
		return o.fail
	}
	return fmt.Sprint(o.refs)
}

func (o outcome) equal(p outcome) bool { return o.fail == p.fail && slices.Equal(o.refs, p.refs) }

// libraryOutcome is what containers/image does to pull named with the
// configuration of sys (docker/docker_image_src.go newImageSource and
// docker/docker_client.go newDockerClient): the rule FindRegistry picks for
// the repository name, its PullSourcesFromReference in order, and each of
// them skipped when FindRegistry on its own name finds a blocked rule.
func libraryOutcome(t *testing.T, sys *types.SystemContext, named reference.Named) outcome {
	t.Helper()
	reg, err := sysregistriesv2.FindRegistry(sys, named.Name())
	if err != nil {
		t.Fatalf("FindRegistry(%s): %v", named.Name(), err)
	}
	if reg == nil {
		return outcome{refs: []string{named.String()}}
	}
	sources, err := reg.PullSourcesFromReference(named)
	if err != nil {
		return outcome{fail: "invalid"}
	}
	var o outcome
	for _, s := range sources {
		other, err := sysregistriesv2.FindRegistry(sys, s.Reference.Name())
		if err != nil {
			t.Fatalf("FindRegistry(%s): %v", s.Reference.Name(), err)
		}
		if other == nil || !other.Blocked {
			o.refs = append(o.refs, s.Reference.String())
		}
	}
	if len(o.refs) == 0 {
		o.fail = "blocked"
	}
	return o
}

// proxyOutcome is the resolver's decision for image.
func proxyOutcome(t *testing.T, r *resolver.Resolver, image string) outcome {
	t.Helper()
	res, err := r.Resolve(image)
	var be *resolver.BlockedError
	switch {
	case errors.As(err, &be):
		return outcome{fail: "blocked"}
	case errors.Is(err, resolver.ErrInvalidReference):
		return outcome{fail: "invalid"}
	case err != nil:
		t.Fatalf("Resolve(%s): %v", image, err)
	}
	var o outcome
	for _, c := range res.Candidates {
		o.refs = append(o.refs, c.Ref.String())
	}
	return o
}

// confDir writes a registries.conf (and an empty drop-in directory) and
// returns the SystemContext that reads exactly them.
func confDir(t *testing.T, conf string) *types.SystemContext {
	t.Helper()
	dir := t.TempDir()
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    filepath.Join(dir, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(dir, "registries.conf.d"),
	}
	if err := os.WriteFile(sys.SystemRegistriesConfPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(sys.SystemRegistriesConfDirPath, 0o755); err != nil {
		t.Fatal(err)
	}
	return sys
}
