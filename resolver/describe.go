package resolver

import (
	"fmt"
	"strings"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
)

// describe renders the rules for check-config, in the library's prefix
// order so the output is stable.
func (rs *ruleSet) describe() string {
	var b strings.Builder
	if rs.mainMissing {
		fmt.Fprintf(&b, "registries.conf: %s (missing: no rules from it)\n", rs.confPath)
	} else {
		fmt.Fprintf(&b, "registries.conf: %s\n", rs.confPath)
	}
	fmt.Fprintf(&b, "drop-in directory: %s (%d file(s))\n", rs.confDir, len(rs.dropIns))
	for _, f := range rs.dropIns {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	if len(rs.searchRegistries) > 0 {
		fmt.Fprintf(&b, "unqualified-search-registries: %s (a short name without an [aliases] entry is completed with each)\n", strings.Join(rs.searchRegistries, ", "))
	} else {
		b.WriteString("unqualified-search-registries: none (a short name without an [aliases] entry is completed with docker.io)\n")
	}
	if len(rs.registries) == 0 {
		b.WriteString("no [[registry]] rules: every image is pulled from its own registry\n")
		return b.String()
	}
	fmt.Fprintf(&b, "%d [[registry]] rule(s); the longest matching prefix wins:\n", len(rs.registries))
	for i := range rs.registries {
		describeRegistry(&b, &rs.registries[i], rs.origin[rs.registries[i].Prefix])
	}
	return b.String()
}

func describeRegistry(b *strings.Builder, r *sysregistriesv2.Registry, origin string) {
	fmt.Fprintf(b, "\nprefix %q", r.Prefix)
	if origin != "" {
		fmt.Fprintf(b, " (from %s)", origin)
	}
	b.WriteString("\n")
	location := r.Location
	if location == "" {
		location = "(none: the image's own host)"
	}
	fmt.Fprintf(b, "  location: %s\n", location)
	switch {
	case r.Blocked && len(r.Mirrors) > 0:
		b.WriteString("  blocked: true (never contact source: only mirrors are tried)\n")
	case r.Blocked:
		b.WriteString("  blocked: true (every pull is refused)\n")
	default:
		b.WriteString("  blocked: false\n")
	}
	fmt.Fprintf(b, "  insecure: %t\n", r.Insecure)
	if r.MirrorByDigestOnly {
		b.WriteString("  mirror-by-digest-only: true (mirrors are used for digest references only)\n")
	}
	if hostOnly(r.Prefix) {
		b.WriteString("  note: a host-only prefix also matches the host on any port (" + r.Prefix + ":5000/...)\n")
	}
	if prefixHasTagOrDigest(r.Prefix) {
		b.WriteString("  note: a prefix with a tag or digest never matches a pull (pulls are matched by repository name)\n")
	}
	if len(r.Mirrors) == 0 {
		b.WriteString("  mirrors: none\n")
		return
	}
	b.WriteString("  mirrors (in order):\n")
	for j, m := range r.Mirrors {
		fmt.Fprintf(b, "    %d. %s pull-from-mirror=%s", j+1, m.Location, mirrorPolicy(r, m))
		if m.Insecure {
			b.WriteString(" insecure")
		}
		b.WriteString("\n")
	}
}

// prefixHasTagOrDigest reports a prefix of the host/repo:tag or
// host/repo@digest form, which containers-registries.conf(5) allows but
// which never matches a pull, as pulls are matched by repository name.
func prefixHasTagOrDigest(prefix string) bool {
	if strings.Contains(prefix, "@") {
		return true
	}
	i := strings.LastIndex(prefix, "/")
	return i >= 0 && strings.Contains(prefix[i:], ":")
}
