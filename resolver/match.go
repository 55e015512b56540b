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
// One deliberate difference: the library lets a host-only prefix match a name
// that continues with ":" ("example.com" matches "example.com:5000/x"), which
// its source calls unintended ("will get fixed eventually, DON'T RELY ON THE
// CURRENT BEHAVIOR"); it would send a pull for one registry to another port or
// host ("mirror.com:5000/x"). The documented semantics is host[:port]
// matching, so ":" after a host-only prefix (always a port, as we match
// repository names) is not a match here. Every name we match is also matched
// by the library at the same prefix, so its rewrite always succeeds on it.

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

// prefixMatches reports whether name lies under prefix.
func prefixMatches(name, prefix string) bool {
	if prefix == "" {
		return false
	}
	if strings.HasPrefix(prefix, "*.") {
		suffix := prefix[1:] // ".example.com"
		i := strings.Index(name, suffix)
		if i < 0 || strings.Contains(name[:i], "/") {
			return false
		}
		end := i + len(suffix)
		return end == len(name) || name[end] == '/' || name[end] == '@'
	}
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	switch rest[0] {
	case '/', '@':
		return true
	case ':':
		// A tag after a repository prefix, but a port after a host prefix.
		return strings.Contains(prefix, "/")
	}
	return false
}
