//go:build e2e

package e2e

import (
	"strings"
	"testing"
)

// TestShortNameAlias: a short name with an [aliases] entry is pulled as CRI-O
// pulls it: the alias, through its mirror rule, from the mirror that has it;
// the image is known by the alias's name.
func TestShortNameAlias(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		full := sourceHost + "/e2e/mirrored"
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1"))+"\n[aliases]\n\"e2e-alias\" = \""+full+"\"\n")
		want := env.image("M:m1/e2e/mirrored:v1")

		wantCands := []string{env.mirrorLoc("m1") + "/e2e/mirrored:v1", full + ":v1"}
		if got := p.resolve("e2e-alias:v1"); strings.Join(got, " ") != strings.Join(wantCands, " ") {
			t.Errorf("resolve e2e-alias:v1 = %q, want %q", got, wantCands)
		}
		id := p.mustPull("e2e-alias:v1", want)
		if n := env.source.manifestRequests("e2e/mirrored"); n != 0 {
			t.Errorf("the source registry got %d manifest requests; the mirror had the image", n)
		}
		checkNames(t, "ImageStatus(alias target)", p.status(full+":v1"), []string{full + ":v1"}, want.Digest)
		checkNames(t, "ImageStatus(id)", p.status(id), []string{full + ":v1"}, want.Digest)
	})
}
