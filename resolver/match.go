package resolver

import (
	"strings"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
)

// Why not sysregistriesv2.FindRegistry: it reads the process-wide cache of
// containers/image, and that cache is not ours to rely on.
//   - InvalidateCache empties it for every caller in the process, and the
//     next FindRegistry then reads the files again: file I/O on the hot path,
//     and a file that is broken or not yet validated by us (unknown keys) would
//     start serving, or fail every pull.
//   - A failed TryUpdatingCache after InvalidateCache leaves no entry at all.
//
// So each load keeps its own snapshot of the merged []Registry and matching
// runs on it. The library does not export its matcher, so match repeats
// findRegistryWithParsedConfig/refMatchingPrefix (v5.42.0): the longest
// prefix wins, the first of equal length in the (prefix-sorted) list wins,
// and a wildcard "*.example.com" matches at the first occurrence of
// ".example.com" before any "/". The candidates themselves still come from
// the library (Registry.PullSourcesFromReference). Tests and FuzzResolve
// check every match against FindRegistry on the same files.
//
// A host-only prefix also matches that host with a port ("registry.corp"
// matches "registry.corp:5000/app", "*.corp" matches "a.corp:5000/app"), as
// in the library: CRI-O and Podman apply such a rule, blocked or mirrored, to
// every port of the host, and so must we to make the same decisions. (The
// library's source calls this unintended, but it is what every client of the
// library does today; check-config says so when a host-only prefix exists.)

// match returns the rule whose prefix best matches name (a repository name
// starting with a host, as reference.Named.Name returns), or nil.
func (rs *ruleSet) match(name string) *sysregistriesv2.Registry {
	var best *sysregistriesv2.Registry
	for i := range rs.registries {
		r := &rs.registries[i]
		if (best == nil || len(r.Prefix) > len(best.Prefix)) && prefixMatches(name, r.Prefix) {
			best = r
		}
	}
	return best
}

// prefixMatches reports whether name lies under prefix: the prefix followed
// by nothing, "/", "@" or ":" (a port after a host-only prefix).
func prefixMatches(name, prefix string) bool {
	if prefix == "" {
		return false
	}
	end := 0
	if strings.HasPrefix(prefix, "*.") {
		suffix := prefix[1:] // ".example.com"
		i := strings.Index(name, suffix)
		if i < 0 || strings.Contains(name[:i], "/") {
			return false
		}
		end = i + len(suffix)
	} else {
		if !strings.HasPrefix(name, prefix) {
			return false
		}
		end = len(prefix)
	}
	return end == len(name) || strings.IndexByte(":/@", name[end]) >= 0
}
