//go:build e2e

package e2e

import (
	"fmt"
	"strings"
)

// rule is one [[registry]] of registries.conf v2.
type rule struct {
	prefix   string
	location string // defaults to prefix
	blocked  bool
	mirrors  []mirror
}

type mirror struct {
	location string // full location, e.g. env.mirrorLoc("m1")
	policy   string // pull-from-mirror: "", "all", "tag-only", "digest-only"
}

// registriesConf renders rules as a registries.conf v2 file.
func registriesConf(rules ...rule) string {
	var b strings.Builder
	b.WriteString("# written by the e2e tests\n")
	for _, r := range rules {
		loc := r.location
		if loc == "" {
			loc = r.prefix
		}
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\n", r.prefix, loc)
		if r.blocked {
			b.WriteString("blocked = true\n")
		}
		for _, m := range r.mirrors {
			fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n", m.location)
			if m.policy != "" {
				fmt.Fprintf(&b, "pull-from-mirror = %q\n", m.policy)
			}
		}
	}
	return b.String()
}

// sourceRule mirrors source.test by the given mirror paths of the mirror registry (all policy).
func sourceRule(paths ...string) rule {
	r := rule{prefix: sourceHost}
	for _, p := range paths {
		r.mirrors = append(r.mirrors, mirror{location: env.mirrorLoc(p)})
	}
	return r
}
