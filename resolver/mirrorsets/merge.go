package mirrorsets

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pull-from-mirror policies written for each kind (containers-registries.conf(5)).
const (
	PullTagOnly    = "tag-only"
	PullDigestOnly = "digest-only"
)

// ErrNoMirrorSets is returned by Merge when no mirror-set object was given.
var ErrNoMirrorSets = errors.New("no ImageTagMirrorSet, ImageDigestMirrorSet or ImageContentSourcePolicy objects found")

// Config is the merged result: the [[registry]] tables of a registries.conf
// v2 drop-in, and what went into them.
type Config struct {
	// Registries has one entry per source, sorted by prefix.
	Registries []Registry
	// Objects are the mirror-set objects merged, in input order.
	Objects []Object
	// Notes are things an operator should know about the result: ignored
	// objects and entries, conflicting mirror orders, references the rules
	// refuse. They are written into the generated file's header.
	Notes []string
}

// Registry is one [[registry]] table. The struct tags are the
// registries.conf v2 keys (go.podman.io/image/v5/pkg/sysregistriesv2.Registry),
// limited to those a mirror set can set.
type Registry struct {
	Prefix string `toml:"prefix"`
	// Location is the source itself; empty for a wildcard prefix, which
	// keeps the host of each reference.
	Location string `toml:"location,omitempty"`
	// Blocked with mirrors: never contact the source (NeverContactSource).
	Blocked bool     `toml:"blocked,omitempty"`
	Mirrors []Mirror `toml:"mirror,omitempty"`
}

// Mirror is one [[registry.mirror]] table.
type Mirror struct {
	Location       string `toml:"location"`
	PullFromMirror string `toml:"pull-from-mirror"`
}

// group collects the entries of one kind (digest or tag) for one source.
type group struct {
	lists [][]string
	never bool     // some entry said NeverContactSource
	from  []string // objects that contributed, for notes
}

// Merge combines objects as the machine-config-operator does for a node:
//
//   - entries without a mirror other than the source are ignored;
//   - per source, the mirror lists of all entries of the same sort (digest:
//     ImageDigestMirrorSet and ImageContentSourcePolicy; tag:
//     ImageTagMirrorSet) are merged into one list that keeps every list's
//     relative order and names each mirror once; where the lists leave the
//     order open, mirrors keep the order they were first seen in (the
//     operator picks alphabetically there; a file given to import has an
//     order, so it is used), and a conflict (a, b in one object, b, a in
//     another) is broken the same way and noted;
//   - the [[registry]] of a source lists the digest mirrors (digest-only),
//     then the tag mirrors (tag-only), and is blocked when any entry with
//     mirrors for that source says NeverContactSource.
//
// Objects of other kinds are ignored with a note. The same object
// (kind and name) given twice is merged once if both copies are equal and
// is an error otherwise.
func Merge(objs []Object) (*Config, error) {
	c := &Config{}
	seen := map[string]Object{}
	for _, o := range objs {
		if !o.Supported() {
			c.note("ignored %s (%s): not a mirror set", o.label(), o.Where())
			continue
		}
		if prev, ok := seen[o.String()]; ok {
			if !sameEntries(prev.Entries, o.Entries) {
				return nil, fmt.Errorf("%s is defined twice with different content: %s and %s", o, prev.Where(), o.Where())
			}
			c.note("%s (%s) repeats %s; merged once", o, o.Where(), prev.Where())
			continue
		}
		seen[o.String()] = o
		c.Objects = append(c.Objects, o)
	}
	if len(c.Objects) == 0 {
		return nil, ErrNoMirrorSets
	}

	digest, tag := map[string]*group{}, map[string]*group{}
	var icsp, sets bool
	for _, o := range c.Objects {
		groups := digest
		if o.Kind.TagOnly() {
			groups = tag
		}
		if o.Kind == ImageContentSourcePolicy {
			icsp = true
		} else {
			sets = true
		}
		if len(o.Entries) == 0 {
			c.note("%s (%s) has no entries", o, o.Where())
		}
		for i, e := range o.Entries {
			if !slices.ContainsFunc(e.Mirrors, func(m string) bool { return m != e.Source }) {
				what := "ignored"
				if e.MirrorSourcePolicy == NeverContactSource {
					what = "ignored, and its NeverContactSource has no effect"
				}
				c.note("%s: %s[%d] (source %s) has no mirror other than the source: %s", o, o.Kind.specField(), i, e.Source, what)
				continue
			}
			g := groups[e.Source]
			if g == nil {
				g = &group{}
				groups[e.Source] = g
			}
			g.lists = append(g.lists, e.Mirrors)
			g.never = g.never || e.MirrorSourcePolicy == NeverContactSource
			if !slices.Contains(g.from, o.String()) {
				g.from = append(g.from, o.String())
			}
		}
	}
	if icsp && sets {
		c.note("OpenShift does not accept ImageContentSourcePolicy objects next to ImageDigestMirrorSet or ImageTagMirrorSet objects; here the ImageContentSourcePolicy entries were merged with the digest mirrors")
	}

	var sources []string
	for s := range digest {
		sources = append(sources, s)
	}
	for s := range tag {
		if digest[s] == nil {
			sources = append(sources, s)
		}
	}
	slices.Sort(sources)
	for _, src := range sources {
		r := Registry{Prefix: src}
		if !strings.HasPrefix(src, "*.") {
			r.Location = src
		}
		dg, tg := digest[src], tag[src]
		r.Mirrors = append(r.Mirrors, c.mirrors(src, dg, PullDigestOnly)...)
		r.Mirrors = append(r.Mirrors, c.mirrors(src, tg, PullTagOnly)...)
		r.Blocked = (dg != nil && dg.never) || (tg != nil && tg.never)
		switch {
		case r.Blocked && dg == nil:
			c.note("%s: NeverContactSource with tag mirrors only: digest references under it are refused", src)
		case r.Blocked && tg == nil:
			c.note("%s: NeverContactSource with digest mirrors only: tag references under it are refused", src)
		}
		c.Registries = append(c.Registries, r)
	}
	return c, nil
}

// mirrors merges a group's lists into [[registry.mirror]] tables.
func (c *Config) mirrors(source string, g *group, pull string) []Mirror {
	if g == nil {
		return nil
	}
	merged, conflict := mergeOrdered(source, g.lists)
	if conflict {
		c.note("%s: the %s mirror orders of %s conflict; used %s", source, strings.TrimSuffix(pull, "-only"), strings.Join(g.from, ", "), strings.Join(merged, ", "))
	}
	out := make([]Mirror, len(merged))
	for i, m := range merged {
		out[i] = Mirror{Location: m, PullFromMirror: pull}
	}
	return out
}

// mergeOrdered merges mirror lists into one in which every mirror appears
// once and, as far as the lists agree, each list's order is kept. The
// source ranks after every list's last mirror unless a list places it
// itself; a source that ends up last is dropped, since registries.conf
// tries it last anyway.
//
// It is a topological sort of the graph whose edges join neighbours in each
// list. Among mirrors free to come next, the one seen first wins; when none
// is free (the lists disagree, conflict is true) the remaining mirror seen
// first is taken.
func mergeOrdered(source string, lists [][]string) (merged []string, conflict bool) {
	var nodes []string
	index := map[string]int{}
	add := func(n string) {
		if _, ok := index[n]; !ok {
			index[n] = len(nodes)
			nodes = append(nodes, n)
		}
	}
	succ := map[string]map[string]bool{}
	indegree := map[string]int{}
	edge := func(from, to string) {
		if succ[from] == nil {
			succ[from] = map[string]bool{}
		}
		if from == to || succ[from][to] {
			return
		}
		succ[from][to] = true
		indegree[to]++
	}
	for _, l := range lists {
		l = unique(l)
		for _, m := range l {
			add(m)
		}
		for i := 0; i+1 < len(l); i++ {
			edge(l[i], l[i+1])
		}
		if !slices.Contains(l, source) {
			add(source)
			edge(l[len(l)-1], source)
		}
	}

	used := make([]bool, len(nodes))
	for len(merged) < len(nodes) {
		next := -1
		for i, n := range nodes {
			if !used[i] && indegree[n] == 0 {
				next = i
				break
			}
		}
		if next < 0 {
			conflict = true
			next = slices.Index(used, false)
		}
		used[next] = true
		merged = append(merged, nodes[next])
		for to := range succ[nodes[next]] {
			indegree[to]--
		}
	}
	if len(merged) > 0 && merged[len(merged)-1] == source {
		merged = merged[:len(merged)-1]
	}
	return merged, conflict
}

// unique drops repeated values, keeping the first of each.
func unique(l []string) []string {
	var out []string
	for _, s := range l {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func sameEntries(a, b []Entry) bool {
	return slices.EqualFunc(a, b, func(x, y Entry) bool {
		return x.Source == y.Source && x.MirrorSourcePolicy == y.MirrorSourcePolicy && slices.Equal(x.Mirrors, y.Mirrors)
	})
}

func (c *Config) note(format string, args ...any) {
	c.Notes = append(c.Notes, fmt.Sprintf(format, args...))
}
