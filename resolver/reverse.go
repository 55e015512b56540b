package resolver

import (
	"strings"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
)

// Originals answers the reverse of Resolve: which original references
// (normalised, as Resolution.Original prints them), under
// the rules in force, have ref (a name a runtime stores an image under) as a
// candidate other than themselves. It is how an alias table that was lost
// is rebuilt from the images the runtime holds: one original means ref was
// pulled for it; several mean the rules do not say which, and none that ref
// is not a rewritten name at all.
//
// Every answer is checked forwards: it resolves, with ref among its
// candidates, under the same rules (longest prefix, pull-from-mirror,
// blocked). A rule with a wildcard prefix is never reversed: the host it
// matched is not part of the rewritten name.
func (r *Resolver) Originals(ref string) []string {
	if len(ref) > maxReferenceLength {
		return nil
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil
	}
	return r.rules.Load().originals(named)
}

func (rs *ruleSet) originals(ref reference.Named) []string {
	want := ref.String()
	seen := map[string]bool{want: true}
	var out []string
	for i := range rs.registries {
		rule := &rs.registries[i]
		if strings.HasPrefix(rule.Prefix, "*.") {
			continue
		}
		endpoints := append([]sysregistriesv2.Endpoint{rule.Endpoint}, rule.Mirrors...)
		for _, ep := range endpoints {
			// The forward rewrite is location + what follows the prefix.
			rest, ok := strings.CutPrefix(want, ep.Location)
			if ep.Location == "" || !ok || rest == "" || !strings.ContainsRune("/:@", rune(rest[0])) {
				continue
			}
			original := rule.Prefix + rest
			if seen[original] {
				continue
			}
			seen[original] = true
			if rs.resolvesTo(original, want) {
				out = append(out, original)
			}
		}
	}
	return out
}

// resolvesTo reports whether original is a normalised reference that
// resolves with want among its candidates.
func (rs *ruleSet) resolvesTo(original, want string) bool {
	named, err := reference.ParseDockerRef(original)
	if err != nil || named.String() != original {
		return false
	}
	res, err := rs.resolve(named)
	if err != nil {
		return false
	}
	for _, c := range res.Candidates {
		if c.Ref.String() == want {
			return true
		}
	}
	return false
}
