package parity

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// Pools the generated registries.conf files and references draw from: hosts
// with and without ports, nested namespaces, wildcards, and mirrors that may
// themselves fall under a rule.
var (
	hosts = []string{
		"registry.corp", "registry.corp:5000", "127.0.0.1", "127.0.0.1:5301", "quay.io",
		"docker.io", "a.example.com", "b.a.example.com", "a.example.com:5000", "localhost",
		"localhost:5000", "mirror.corp", "mirror.corp:8443",
	}
	wildcards = []string{"*.example.com", "*.a.example.com", "*.corp"}
	paths     = []string{"", "/ns", "/ns/app", "/library"}
	mirrorLoc = []string{
		"mirror.corp/cache", "mirror.corp:8443/cache", "registry.corp/mirror", "127.0.0.1:5301/m",
		"quay.io/mirror", "b.a.example.com/m", "localhost:5000/m", "mirror.corp",
	}
	policies = []string{"", "all", "tag-only", "digest-only"}
)

// genRegistriesConf writes a random but valid registries.conf: unique
// prefixes, locations that are registry hosts, no mixing of
// mirror-by-digest-only with pull-from-mirror.
func genRegistriesConf(rng *rand.Rand) string {
	var b strings.Builder
	used := map[string]bool{}
	for range 1 + rng.IntN(5) {
		var prefix, location string
		if rng.IntN(5) == 0 {
			prefix = wildcards[rng.IntN(len(wildcards))]
		} else {
			prefix = hosts[rng.IntN(len(hosts))] + paths[rng.IntN(len(paths))]
			location = prefix
			if rng.IntN(4) == 0 { // a rewritten location
				location = mirrorLoc[rng.IntN(len(mirrorLoc))] + paths[rng.IntN(len(paths))]
			}
		}
		if used[prefix] {
			continue
		}
		used[prefix] = true
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\n", prefix)
		if location != "" {
			fmt.Fprintf(&b, "location = %q\n", location)
		}
		if rng.IntN(3) == 0 {
			b.WriteString("blocked = true\n")
		}
		byDigest := rng.IntN(8) == 0
		if byDigest {
			b.WriteString("mirror-by-digest-only = true\n")
		}
		for range rng.IntN(3) {
			fmt.Fprintf(&b, "[[registry.mirror]]\nlocation = %q\n", mirrorLoc[rng.IntN(len(mirrorLoc))]+paths[rng.IntN(len(paths))])
			if p := policies[rng.IntN(len(policies))]; p != "" && !byDigest {
				fmt.Fprintf(&b, "pull-from-mirror = %q\n", p)
			}
		}
	}
	return b.String()
}

// references are pulled under every generated configuration.
func references() []string {
	var out []string
	for _, h := range append(hosts, "x.example.com", "x.y.example.com:5000", "z.corp", "z.corp:443") {
		for _, repo := range []string{"/app", "/ns/app", "/ns/app/x", "/library/nginx"} {
			out = append(out, h+repo+":v1", h+repo+"@"+testDigest)
		}
	}
	return append(out, "nginx", "nginx:1.27", "library/nginx@"+testDigest, "team/app:v1")
}

// TestResolveMatchesContainersImage compares every pull decision of the
// resolver with containers/image's over the generated corpus.
func TestResolveMatchesContainersImage(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 1))
	refs := references()
	const configs = 300
	compared, refusedByBoth := 0, 0
	for i := range configs {
		conf := genRegistriesConf(rng)
		sys := confDir(t, conf)
		_, libErr := sysregistriesv2.TryUpdatingCache(sys)
		r, err := resolver.New(sys.SystemRegistriesConfPath, sys.SystemRegistriesConfDirPath)
		switch {
		case libErr != nil && err != nil:
			refusedByBoth++
			continue
		case libErr != nil:
			t.Fatalf("config %d: containers/image refuses it (%v), the proxy accepts it:\n%s", i, libErr, conf)
		case err != nil:
			t.Fatalf("config %d: the proxy refuses what containers/image accepts: %v\n%s", i, err, conf)
		}
		for _, image := range refs {
			named, err := reference.ParseDockerRef(image)
			if err != nil {
				t.Fatalf("corpus reference %q: %v", image, err)
			}
			want := libraryOutcome(t, sys, named)
			got := proxyOutcome(t, r, image)
			if !got.equal(want) {
				t.Errorf("config %d, %s: proxy %s, containers/image %s\n%s", i, image, got, want, conf)
			}
			compared++
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("%d decisions compared over %d configurations (%d refused by both)", compared, configs, refusedByBoth)
	if refusedByBoth > configs/2 {
		t.Errorf("%d of %d generated configurations are invalid: the generator no longer exercises the resolver", refusedByBoth, configs)
	}
}
