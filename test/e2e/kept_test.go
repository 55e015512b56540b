//go:build e2e

package e2e

import (
	"slices"
	"testing"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// TestMirrorNamePulledByItself (issue 15 item 8): the original is pulled through a mirror, then
// the mirror's reference is pulled by its own name (the same image). Both names stay visible in
// crictl images and ImageStatus, also after a restart.
func TestMirrorNamePulledByItself(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		want := mustPushRandom(t, env.mirror.host+"/m1/e2e/own:v1")
		p := startProxyOn(t, rt, registriesConf(sourceRule("m1")))
		original, mirrored := sourceHost+"/e2e/own:v1", env.mirror.host+"/m1/e2e/own:v1"
		p.mustPull(original, want)
		p.mustCrictl("pull", mirrored)

		check := func(when string) {
			t.Helper()
			for _, ref := range []string{original, mirrored} {
				img := p.status(ref)
				if img.GetId() != rt.id(want) || !slices.Contains(img.GetRepoTags(), original) || !slices.Contains(img.GetRepoTags(), mirrored) {
					t.Errorf("%s: ImageStatus(%s) = %s %q, want %s with both %s and %s", when, ref, img.GetId(), img.GetRepoTags(), rt.id(want), original, mirrored)
				}
			}
			table := p.mustCrictl("images")
			if !hasImageRow(table, testenv.MustRepository(original), "v1") || !hasImageRow(table, testenv.MustRepository(mirrored), "v1") {
				t.Errorf("%s: crictl images does not show both names:\n%s", when, table)
			}
		}
		check("after the pulls")
		p.restart()
		check("after a restart")
	})
}
