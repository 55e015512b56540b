package resolver

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// TagCheck is how far a mirror's answer for a tag is trusted: the policy of
// the proxy's own [tag-check] table (registries.conf has no key for it, and
// must stay readable by CRI-O).
type TagCheck string

const (
	// TagCheckOff trusts a mirror's answer for a tag as it is.
	TagCheckOff TagCheck = "off"
	// TagCheckSourceIfReachable asks the source for the tag's digest and
	// pulls only a mirror that agrees (or serves the same image for the
	// node's platform); an unreachable source leaves the pull as it would be
	// without the check.
	TagCheckSourceIfReachable TagCheck = "source-if-reachable"
	// TagCheckSourceRequired is TagCheckSourceIfReachable, but a tag the
	// source cannot be asked about is not pulled.
	TagCheckSourceRequired TagCheck = "source-required"
)

// TagCheckModes lists the values of TagCheck.
var TagCheckModes = []TagCheck{TagCheckOff, TagCheckSourceIfReachable, TagCheckSourceRequired}

// ParseTagCheck reads one policy value.
func ParseTagCheck(s string) (TagCheck, error) {
	if m := TagCheck(s); slices.Contains(TagCheckModes, m) {
		return m, nil
	}
	return "", fmt.Errorf("%q is not off, source-if-reachable or source-required", s)
}

// TagCheckEntry is the policy of one prefix.
type TagCheckEntry struct {
	Prefix string   `json:"prefix"`
	Mode   TagCheck `json:"mode"`
}

// TagCheckPolicy maps prefixes of image names to a TagCheck. Prefixes match
// as registries.conf prefixes do: the longest matching prefix wins, a
// "*.example.com" wildcard matches any host under example.com, and a
// host-only prefix matches that host on any port. A name no prefix matches
// is TagCheckOff. The zero value (and nil) checks nothing.
type TagCheckPolicy struct {
	entries []TagCheckEntry // sorted by prefix
}

// ParseTagCheckPolicy reads "prefix=mode,prefix=mode": the form of the
// --tag-check flag, and of the config file's [tag-check] table once
// flattened. Errors name the prefix.
func ParseTagCheckPolicy(s string) (*TagCheckPolicy, error) {
	p := &TagCheckPolicy{}
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		prefix, value, ok := strings.Cut(item, "=")
		prefix, value = strings.TrimSpace(prefix), strings.TrimSpace(value)
		if !ok {
			return nil, fmt.Errorf("%q: want prefix=mode, mode one of off, source-if-reachable, source-required", item)
		}
		if err := validTagCheckPrefix(prefix); err != nil {
			return nil, err
		}
		mode, err := ParseTagCheck(value)
		if err != nil {
			return nil, fmt.Errorf("prefix %q: %w", prefix, err)
		}
		if seen[prefix] {
			return nil, fmt.Errorf("prefix %q is given twice", prefix)
		}
		seen[prefix] = true
		p.entries = append(p.entries, TagCheckEntry{Prefix: prefix, Mode: mode})
	}
	sort.Slice(p.entries, func(i, j int) bool { return p.entries[i].Prefix < p.entries[j].Prefix })
	return p, nil
}

// validTagCheckPrefix refuses what can never match a repository name.
func validTagCheckPrefix(prefix string) error {
	switch {
	case prefix == "":
		return fmt.Errorf("an empty prefix matches nothing")
	case strings.Contains(prefix, "://"):
		return fmt.Errorf("prefix %q: a prefix is a repository name without a scheme", prefix)
	case strings.ContainsAny(prefix, " \t\"@"):
		return fmt.Errorf("prefix %q: not a repository name prefix", prefix)
	case strings.Contains(prefix[1:], "*"), strings.HasPrefix(prefix, "*") && !strings.HasPrefix(prefix, "*."):
		return fmt.Errorf("prefix %q: a wildcard is allowed only as a leading \"*.\"", prefix)
	}
	return nil
}

// For returns the entry whose prefix best matches name (a repository name
// starting with a host), and false when none does (the mode is then off).
func (p *TagCheckPolicy) For(name string) (TagCheckEntry, bool) {
	if p == nil {
		return TagCheckEntry{Mode: TagCheckOff}, false
	}
	best := -1
	for i, e := range p.entries {
		if (best < 0 || len(e.Prefix) > len(p.entries[best].Prefix)) && prefixMatches(name, e.Prefix) {
			best = i
		}
	}
	if best < 0 {
		return TagCheckEntry{Mode: TagCheckOff}, false
	}
	return p.entries[best], true
}

// Entries returns the policy's entries, by prefix.
func (p *TagCheckPolicy) Entries() []TagCheckEntry {
	if p == nil {
		return []TagCheckEntry{}
	}
	return append([]TagCheckEntry{}, p.entries...)
}

// String renders the policy in the form ParseTagCheckPolicy reads.
func (p *TagCheckPolicy) String() string {
	var parts []string
	for _, e := range p.Entries() {
		parts = append(parts, e.Prefix+"="+string(e.Mode))
	}
	return strings.Join(parts, ",")
}

// Overlaps reports whether a pull under rule prefix rulePrefix can meet an
// entry whose mode is not off: the entry's prefix lies under the rule's, or
// the rule's under the entry's.
func (p *TagCheckPolicy) Overlaps(rulePrefix string) bool {
	for _, e := range p.Entries() {
		if e.Mode == TagCheckOff {
			continue
		}
		if prefixMatches(e.Prefix, rulePrefix) || prefixMatches(rulePrefix, e.Prefix) {
			return true
		}
	}
	return false
}
