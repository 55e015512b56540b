package parity

import (
	"strings"
	"testing"

	"go.podman.io/image/v5/pkg/sysregistriesv2"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// TestStricterThanContainersImage pins every registries.conf the proxy
// refuses although containers/image accepts it; the README's compatibility
// section lists the same cases, and check-config reports each with this
// message. A case that the library starts refusing, or the proxy starts
// accepting, fails here so the list stays true.
func TestStricterThanContainersImage(t *testing.T) {
	for _, tc := range []struct {
		name, conf, msg string
	}{
		{"unknown key", "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.example.com\"\npull_from_mirror = \"tag-only\"\n",
			`unknown key "registry.mirror.pull_from_mirror"`},
		{"two rules for one prefix in one file", "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"a.example.com\"\n[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"b.example.com\"\n",
			`prefix "quay.io" is already defined by registry[0] in this file`},
		{"location read as a Docker Hub namespace", "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"mirror\"\n",
			"would be read as a Docker Hub namespace"},
		{"location that is not a repository", "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.example.com/Upper\"\n",
			"is not a registry host[:port][/path]"},
		{"namespace-proxy", "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.example.com\"\nnamespace-proxy = \"quay.io\"\n",
			"namespace-proxy is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := confDir(t, tc.conf)
			if _, err := sysregistriesv2.TryUpdatingCache(sys); err != nil {
				t.Fatalf("containers/image refuses it too (%v): no longer a difference", err)
			}
			_, err := resolver.New(sys.SystemRegistriesConfPath, sys.SystemRegistriesConfDirPath)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), sys.SystemRegistriesConfPath) {
				t.Errorf("resolver.New = %v, want an error naming the file and containing %q", err, tc.msg)
			}
		})
	}
}
