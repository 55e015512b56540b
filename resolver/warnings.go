package resolver

import (
	"fmt"
	"strings"

	"go.podman.io/image/v5/types"
)

// Warnings lists what in the rules in effect is valid and followed as
// containers/image follows it, but often surprises whoever wrote it.
// check-config prints them; they never stop the proxy.
func (r *Resolver) Warnings() []string {
	rs := r.rules.Load()
	out := rs.warnings()
	if rs.shortNameModeKey != "" {
		mode := "enforcing"
		if r.shortNameMode == types.ShortNameModeDisabled {
			mode = "disabled"
		}
		out = append(out, fmt.Sprintf("short-name-mode in %s is not used: as in CRI-O (its short_name_mode), --short-name-mode decides (%s)", rs.shortNameModeKey, mode))
	}
	// Mirror credentials are looked up by containers/image with the proxy's
	// auth file; it takes credential helpers from its default registries.conf
	// search, which is these files only at their default paths.
	if rs.credentialHelpersKey != "" && (r.confPath != DefaultConfPath || r.confDir != DefaultConfDir) {
		out = append(out, fmt.Sprintf("credential-helpers in %s is not used for mirror credentials: they are looked up with the helpers of %s and %s (containers/image's defaults)", rs.credentialHelpersKey, DefaultConfPath, DefaultConfDir))
	}
	if rs.layerStoreHelperKey != "" {
		out = append(out, fmt.Sprintf("additional-layer-store-auth-helper in %s is not used: it belongs to the runtime's image store, which the proxy does not manage", rs.layerStoreHelperKey))
	}
	return out
}

func (rs *ruleSet) warnings() []string {
	var out []string
	for i := range rs.registries {
		reg := &rs.registries[i]
		where := fmt.Sprintf("rule prefix %q", reg.Prefix)
		if f := rs.origin[reg.Prefix]; f != "" {
			where += " in " + f
		}
		// Only when the location is not blocked itself: then it is pulled.
		if other := rs.match(reg.Location); reg.Blocked && reg.Location != "" && reg.Location != reg.Prefix && (other == nil || !other.Blocked) {
			out = append(out, fmt.Sprintf("%s: blocked = true with location %q: blocked applies to the address contacted, so pulls are still made from %q (after any mirrors); block %q in a rule of its own to stop that",
				where, reg.Location, reg.Location, reg.Location))
		}
		var insecure []string
		if reg.Insecure {
			insecure = append(insecure, reg.Location)
		}
		for _, m := range reg.Mirrors {
			if m.Insecure {
				insecure = append(insecure, m.Location)
			}
		}
		if len(insecure) > 0 {
			out = append(out, fmt.Sprintf("%s: insecure = true for %s: the runtime makes the pull, so it must itself allow plain HTTP or unverified TLS for that host (containerd: certs.d/HOST/hosts.toml); the proxy applies insecure to its manifest probe only",
				where, strings.Join(insecure, ", ")))
		}
	}
	return out
}

// hostOnly reports a prefix that names a host without a port or path; such
// a prefix also matches the host on every port.
func hostOnly(prefix string) bool {
	return !strings.ContainsAny(prefix, "/:@")
}
