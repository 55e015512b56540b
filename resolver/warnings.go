package resolver

import (
	"fmt"
	"strings"
)

// Warnings lists what in the rules in effect is valid and followed as
// containers/image follows it, but often surprises whoever wrote it.
// check-config prints them; they never stop the proxy.
func (r *Resolver) Warnings() []string {
	return r.rules.Load().warnings()
}

func (rs *ruleSet) warnings() []string {
	var out []string
	for i := range rs.registries {
		reg := &rs.registries[i]
		where := fmt.Sprintf("rule prefix %q", reg.Prefix)
		if f := rs.origin[reg.Prefix]; f != "" {
			where += " in " + f
		}
		if reg.Blocked && reg.Location != "" && reg.Location != reg.Prefix {
			out = append(out, fmt.Sprintf("%s: blocked = true with location %q: blocked applies to the address contacted, so pulls are still made from %q (after any mirrors); block %q in a rule of its own to stop that",
				where, reg.Location, reg.Location, reg.Location))
		}
	}
	return out
}

// hostOnly reports a prefix that names a host without a port or path; such
// a prefix also matches the host on every port.
func hostOnly(prefix string) bool {
	return !strings.ContainsAny(prefix, "/:@")
}
