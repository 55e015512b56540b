package parity

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/shortnames"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

var (
	shortImages  = []string{"app", "app:1", "team/app", "team/app@" + testDigest, "nginx", "nginx:1.27", "library/nginx:1", "tools:2@" + testDigest}
	aliasTargets = []string{"quay.io/lib/app", "registry.corp:5000/team/app", "b.a.example.com/x/app", "docker.io/library/nginx", "127.0.0.1:5301/ns/tools"}
	searchPool   = []string{"quay.io", "docker.io", "registry.corp:5000", "127.0.0.1", "a.example.com", "mirror.corp"}
)

// genShortNameConf adds [aliases] and unqualified-search-registries to a
// generated rule set; either may be missing.
func genShortNameConf(rng *rand.Rand) string {
	var b strings.Builder
	if n := rng.IntN(4); n > 0 {
		var regs []string
		for _, i := range rng.Perm(len(searchPool))[:n] {
			regs = append(regs, fmt.Sprintf("%q", searchPool[i]))
		}
		fmt.Fprintf(&b, "unqualified-search-registries = [%s]\n", strings.Join(regs, ", "))
	}
	rules := genRegistriesConf(rng)
	b.WriteString(rules)
	if rng.IntN(2) == 0 {
		b.WriteString("\n[aliases]\n")
		for _, name := range []string{"app", "team/app", "nginx", "tools"} {
			if rng.IntN(2) == 0 {
				fmt.Fprintf(&b, "%q = %q\n", name, aliasTargets[rng.IntN(len(aliasTargets))])
			}
		}
	}
	return b.String()
}

// criOShortName is what CRI-O's PullImage does with a short name
// (internal/storage CandidatesForPotentiallyShortImageName, then one pull per
// candidate until one works): containers/image's shortnames.Resolve, which
// in enforcing mode without a terminal refuses more than one completion, and
// each completion pulled as libraryOutcome describes, a failing one skipped.
// The library is asked in disabled mode (it then neither prompts nor looks at
// the terminal) and the enforcing rule applied as it applies it. Where the
// files give neither an alias nor search registries, CRI-O refuses the name
// and the proxy deliberately keeps docker.io (README, compatibility).
func criOShortName(t *testing.T, sys *types.SystemContext, image string, enforcing bool) outcome {
	t.Helper()
	s := *sys
	disabled := types.ShortNameModeDisabled
	s.ShortNameMode = &disabled
	s.UserShortNameAliasConfPath = filepath.Join(t.TempDir(), "no-alias-cache.conf")
	resolved, err := shortnames.Resolve(&s, image)
	if err != nil {
		search, serr := sysregistriesv2.UnqualifiedSearchRegistries(sys)
		if serr != nil {
			t.Fatal(serr)
		}
		if len(search) == 0 {
			named, err := reference.ParseDockerRef(image)
			if err != nil {
				t.Fatal(err)
			}
			return libraryOutcome(t, sys, named)
		}
		return outcome{fail: "invalid"}
	}
	if enforcing && len(resolved.PullCandidates) > 1 {
		return outcome{fail: "invalid"}
	}
	var o, first outcome
	for _, c := range resolved.PullCandidates {
		named, err := reference.ParseDockerRef(c.Value.String())
		if err != nil {
			t.Fatal(err)
		}
		one := libraryOutcome(t, sys, named)
		if one.fail != "" {
			if first.fail == "" {
				first = one
			}
			continue
		}
		o.refs = append(o.refs, one.refs...)
	}
	if len(o.refs) == 0 {
		return first
	}
	return o
}

// TestShortNamesMatchCRIO compares the resolver's short-name decisions with
// CRI-O's, in both of CRI-O's short-name modes.
func TestShortNamesMatchCRIO(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 3))
	const configs = 200
	compared := 0
	for i := range configs {
		conf := genShortNameConf(rng)
		sys := confDir(t, conf)
		if _, err := sysregistriesv2.TryUpdatingCache(sys); err != nil {
			t.Fatalf("config %d: containers/image refuses it: %v\n%s", i, err, conf)
		}
		for _, mode := range []string{"enforcing", "disabled"} {
			r, err := resolver.New(sys.SystemRegistriesConfPath, sys.SystemRegistriesConfDirPath, resolver.WithShortNameMode(mode))
			if err != nil {
				t.Fatalf("config %d: the proxy refuses what containers/image accepts: %v\n%s", i, err, conf)
			}
			for _, image := range shortImages {
				want := criOShortName(t, sys, image, mode == "enforcing")
				got := proxyOutcome(t, r, image)
				if !got.equal(want) {
					t.Errorf("config %d, %s mode, %s: proxy %s, CRI-O %s\n%s", i, mode, image, got, want, conf)
				}
				compared++
			}
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("%d short-name decisions compared over %d configurations", compared, configs)
}
