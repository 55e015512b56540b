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

// Merge combines objects as the machine-config-operator does for a node
// (openshift/machine-config-operator container-runtime-config helpers and
// openshift/runtime-utils EditRegistriesConfig):
//
//   - the set is refused, as the operator refuses it (keeping the node's old
//     registries.conf), when two entries for the same source disagree on
//     mirrorSourcePolicy (an ImageContentSourcePolicy entry counts as
//     AllowContactingSource, an entry without mirrors counts too), or when a
//     NeverContactSource entry lists its source among its mirrors;
//   - entries without a mirror other than the source are then ignored;
//   - per source, the mirror lists of all entries of the same sort (digest:
//     ImageDigestMirrorSet and ImageContentSourcePolicy; tag:
//     ImageTagMirrorSet) are merged into one list that keeps every list's
//     relative order, breaking ties alphabetically (see mergeOrdered), so
//     the order of the objects and files does not matter;
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

	if err := checkPolicies(c.Objects); err != nil {
		return nil, err
	}

	digest, tag := map[string]*group{}, map[string]*group{}
	for _, o := range c.Objects {
		groups := digest
		if o.Kind.TagOnly() {
			groups = tag
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
		if r.Location == "" && slices.ContainsFunc(r.Mirrors, func(m Mirror) bool { return m.Location == src }) {
			// The operator's merge can place the source before a mirror
			// (lists that loop, or an ImageContentSourcePolicy repeating a
			// mirror); it then stays in the list as a mirror. For a wildcard
			// that mirror is "*.domain": no reference can be rewritten to
			// it, and every pull it applies to fails on the node.
			return nil, fmt.Errorf("%s: the machine-config-operator would write the wildcard source %q as one of its own mirrors (the mirror lists of %s loop or repeat a mirror), which fails every pull under it; reorder or deduplicate the mirrors",
				src, src, strings.Join(append(groupFrom(dg), groupFrom(tg)...), ", "))
		}
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
		c.note("%s: the %s mirror orders of %s conflict (or repeat a mirror); used %s", source, strings.TrimSuffix(pull, "-only"), strings.Join(g.from, ", "), strings.Join(merged, ", "))
	}
	out := make([]Mirror, len(merged))
	for i, m := range merged {
		out[i] = Mirror{Location: m, PullFromMirror: pull}
	}
	return out
}

// mergeOrdered merges mirror lists into one as the machine-config-operator
// does (openshift/runtime-utils pkg/registries, mergedMirrors and topoGraph):
// a topological sort of the graph whose edges join neighbours in each list,
// plus an edge from a list's last mirror to the source when the list does not
// name the source itself. The sort is Kahn's, with a first-in first-out
// queue: it starts with the mirrors no edge points to, in alphabetical order;
// each mirror taken appends the mirrors it frees, in alphabetical order; when
// the queue is empty but mirrors remain (the lists disagree: conflict is
// true), the alphabetically first one not yet taken is. A source that ends up
// last is dropped, since registries.conf tries it last anyway; one placed
// before a mirror stays a mirror.
//
// So the result depends only on the lists' content, never on the order of the
// objects: [zeta1 zeta2] + [alpha1 alpha2] gives alpha1 zeta1 alpha2 zeta2.
func mergeOrdered(source string, lists [][]string) (merged []string, conflict bool) {
	preds := map[string]map[string]bool{} // mirror → mirrors with an edge to it
	succs := map[string]map[string]bool{}
	node := func(n string) {
		if preds[n] == nil {
			preds[n], succs[n] = map[string]bool{}, map[string]bool{}
		}
	}
	edge := func(from, to string) {
		node(from)
		node(to)
		succs[from][to] = true
		preds[to][from] = true
	}
	for _, l := range lists {
		for i := 0; i+1 < len(l); i++ {
			edge(l[i], l[i+1])
		}
		if len(l) > 0 && !slices.Contains(l, source) {
			edge(l[len(l)-1], source)
		}
	}

	all := make([]string, 0, len(preds))
	for n := range preds {
		all = append(all, n)
	}
	slices.Sort(all)
	var queue []string
	for _, n := range all {
		if len(preds[n]) == 0 {
			queue = append(queue, n)
		}
	}
	used := map[string]bool{}
	next := 0 // into all, for breaking loops
	for len(merged) < len(all) {
		var n string
		if len(queue) > 0 {
			n, queue = queue[0], queue[1:]
		} else {
			for used[all[next]] {
				next++
			}
			n = all[next]
			conflict = true
		}
		used[n] = true
		merged = append(merged, n)
		var freed []string
		for to := range succs[n] {
			delete(preds[to], n)
			if len(preds[to]) == 0 && !used[to] {
				freed = append(freed, to)
			}
		}
		slices.Sort(freed)
		queue = append(queue, freed...)
	}
	if len(merged) > 0 && merged[len(merged)-1] == source {
		merged = merged[:len(merged)-1]
	}
	return merged, conflict
}

// groupFrom names the objects behind a group, none for no group.
func groupFrom(g *group) []string {
	if g == nil {
		return nil
	}
	return g.from
}

// checkPolicies refuses what the machine-config-operator refuses before it
// merges anything: two entries for one source with different
// mirrorSourcePolicy values, and NeverContactSource with the source among
// its own mirrors. Without the first check the stricter policy would win
// silently (and digest pulls lose their source fallback); OpenShift instead
// keeps the node's previous configuration and reports the error.
func checkPolicies(objs []Object) error {
	type first struct {
		policy MirrorSourcePolicy
		where  string
	}
	seen := map[string]first{}
	for _, o := range objs {
		for i, e := range o.Entries {
			policy := e.MirrorSourcePolicy
			if policy == "" {
				policy = AllowContactingSource
			}
			where := fmt.Sprintf("%s (%s) spec.%s[%d]", o, o.Where(), o.Kind.specField(), i)
			if policy == NeverContactSource && slices.Contains(e.Mirrors, e.Source) {
				return fmt.Errorf("%s: mirrorSourcePolicy NeverContactSource, but the source %q is one of its mirrors; OpenShift refuses this", where, e.Source)
			}
			if f, ok := seen[e.Source]; !ok {
				seen[e.Source] = first{policy, where}
			} else if f.policy != policy {
				return fmt.Errorf("conflicting mirrorSourcePolicy for source %q: %s in %s, %s in %s; OpenShift refuses the whole set and keeps the node's previous registries.conf",
					e.Source, f.policy, f.where, policy, where)
			}
		}
	}
	return nil
}

func sameEntries(a, b []Entry) bool {
	return slices.EqualFunc(a, b, func(x, y Entry) bool {
		return x.Source == y.Source && x.MirrorSourcePolicy == y.MirrorSourcePolicy && slices.Equal(x.Mirrors, y.Mirrors)
	})
}

func (c *Config) note(format string, args ...any) {
	c.Notes = append(c.Notes, fmt.Sprintf(format, args...))
}
