package mirrorsets

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func itms(name string, entries ...Entry) Object {
	return Object{APIVersion: ConfigV1, Kind: ImageTagMirrorSet, Name: name, File: "in.yaml", Entries: entries}
}

func idms(name string, entries ...Entry) Object {
	return Object{APIVersion: ConfigV1, Kind: ImageDigestMirrorSet, Name: name, File: "in.yaml", Entries: entries}
}

func icsp(name string, entries ...Entry) Object {
	return Object{APIVersion: OperatorV1alpha1, Kind: ImageContentSourcePolicy, Name: name, File: "in.yaml", Entries: entries}
}

func entry(source string, mirrors ...string) Entry { return Entry{Source: source, Mirrors: mirrors} }

func never(e Entry) Entry {
	e.MirrorSourcePolicy = NeverContactSource
	return e
}

func tagOnly(locs ...string) []Mirror    { return mirrorList(PullTagOnly, locs) }
func digestOnly(locs ...string) []Mirror { return mirrorList(PullDigestOnly, locs) }

func mirrorList(pull string, locs []string) []Mirror {
	out := make([]Mirror, len(locs))
	for i, l := range locs {
		out[i] = Mirror{Location: l, PullFromMirror: pull}
	}
	return out
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		objs  []Object
		want  []Registry
		notes []string // each must appear in some note; nil means no notes
	}{
		{
			name:  "ImageTagMirrorSet with NeverContactSource",
			objs:  []Object{itms("tags", never(entry("quay.io/ocp", "m1.example.com/ocp", "m2.example.com/ocp")))},
			want:  []Registry{{Prefix: "quay.io/ocp", Location: "quay.io/ocp", Blocked: true, Mirrors: tagOnly("m1.example.com/ocp", "m2.example.com/ocp")}},
			notes: []string{"quay.io/ocp: NeverContactSource with tag mirrors only: digest references under it are refused"},
		},
		{
			name: "ImageDigestMirrorSet",
			objs: []Object{idms("digests", entry("registry.redhat.io", "m.example.com/redhat"))},
			want: []Registry{{Prefix: "registry.redhat.io", Location: "registry.redhat.io", Mirrors: digestOnly("m.example.com/redhat")}},
		},
		{
			name:  "ImageContentSourcePolicy is digest-only; its repeated mirrors collapse",
			objs:  []Object{icsp("release", entry("quay.io/ocp/release", "m.example.com/ocp", "m.example.com/ocp", "n.example.com/ocp"))},
			want:  []Registry{{Prefix: "quay.io/ocp/release", Location: "quay.io/ocp/release", Mirrors: digestOnly("m.example.com/ocp", "n.example.com/ocp")}},
			notes: []string{"conflict (or repeat a mirror)"},
		},
		{
			name: "same source in several objects: orders kept, duplicates dropped",
			objs: []Object{
				itms("a", entry("docker.io", "b.example.com", "c.example.com")),
				itms("b", entry("docker.io", "a.example.com", "b.example.com")),
			},
			want: []Registry{{Prefix: "docker.io", Location: "docker.io", Mirrors: tagOnly("a.example.com", "b.example.com", "c.example.com")}},
		},
		{
			name: "overlapping lists chain: a b c + c d e",
			objs: []Object{
				idms("one", entry("quay.io/x", "a.example.com/x", "b.example.com/x", "c.example.com/x")),
				idms("two", entry("quay.io/x", "c.example.com/x", "d.example.com/x", "e.example.com/x")),
			},
			want: []Registry{{Prefix: "quay.io/x", Location: "quay.io/x", Mirrors: digestOnly("a.example.com/x", "b.example.com/x", "c.example.com/x", "d.example.com/x", "e.example.com/x")}},
		},
		{
			name: "unrelated lists: alphabetical, whatever the input order",
			objs: []Object{
				idms("vendor", entry("source.example.com", "vendor-mirror.example.com")),
				idms("admin", entry("source.example.com", "admin-mirror.example.com")),
			},
			want: []Registry{{Prefix: "source.example.com", Location: "source.example.com", Mirrors: digestOnly("admin-mirror.example.com", "vendor-mirror.example.com")}},
		},
		{
			name: "conflicting orders: broken alphabetically, and a note says so",
			objs: []Object{
				itms("ba", entry("quay.io/x", "b.example.com/x", "a.example.com/x")),
				itms("ab", entry("quay.io/x", "a.example.com/x", "b.example.com/x")),
			},
			want:  []Registry{{Prefix: "quay.io/x", Location: "quay.io/x", Mirrors: tagOnly("a.example.com/x", "b.example.com/x")}},
			notes: []string{"quay.io/x: the tag mirror orders of ImageTagMirrorSet/ba, ImageTagMirrorSet/ab conflict (or repeat a mirror); used a.example.com/x, b.example.com/x"},
		},
		{
			name: "the source listed among the mirrors keeps its place, or goes when last",
			objs: []Object{
				idms("a", entry("src.example.com", "z.example.com", "src.example.com", "y.example.com")),
				idms("b", entry("src.example.com", "src.example.com", "y.example.com", "x.example.com")),
				idms("c", entry("other.example.com", "m.example.com", "other.example.com")),
			},
			want: []Registry{
				{Prefix: "other.example.com", Location: "other.example.com", Mirrors: digestOnly("m.example.com")},
				{Prefix: "src.example.com", Location: "src.example.com", Mirrors: digestOnly("z.example.com", "src.example.com", "y.example.com", "x.example.com")},
			},
		},
		{
			name: "entries without a real mirror are ignored, NeverContactSource with them",
			objs: []Object{
				itms("t", entry("a.example.com"), never(entry("b.example.com")), entry("c.example.com", "m.example.com/c")),
			},
			want: []Registry{{Prefix: "c.example.com", Location: "c.example.com", Mirrors: tagOnly("m.example.com/c")}},
			notes: []string{
				"ImageTagMirrorSet/t: imageTagMirrors[0] (source a.example.com) has no mirror other than the source: ignored",
				"imageTagMirrors[1] (source b.example.com) has no mirror other than the source: ignored, and its NeverContactSource has no effect",
			},
		},
		{
			name: "wildcard source: prefix without location",
			objs: []Object{itms("gcr", entry("*.gcr.io", "m.example.com/gcr"))},
			want: []Registry{{Prefix: "*.gcr.io", Mirrors: tagOnly("m.example.com/gcr")}},
		},
		{
			name: "digest and tag mirrors of one source share a [[registry]], digests first; NeverContactSource from either blocks it",
			objs: []Object{
				itms("tags", never(entry("registry.k8s.io", "m.example.com/k8s", "cache.example.com/k8s"))),
				idms("digests", never(entry("registry.k8s.io", "m.example.com/k8s"))),
			},
			want: []Registry{{Prefix: "registry.k8s.io", Location: "registry.k8s.io", Blocked: true,
				Mirrors: append(digestOnly("m.example.com/k8s"), tagOnly("m.example.com/k8s", "cache.example.com/k8s")...)}},
		},
		{
			name: "NeverContactSource in two objects",
			objs: []Object{
				idms("b", never(entry("quay.io/x", "b.example.com/x"))),
				idms("a", never(entry("quay.io/x", "a.example.com/x"))),
			},
			want:  []Registry{{Prefix: "quay.io/x", Location: "quay.io/x", Blocked: true, Mirrors: digestOnly("a.example.com/x", "b.example.com/x")}},
			notes: []string{"quay.io/x: NeverContactSource with digest mirrors only: tag references under it are refused"},
		},
		{
			name: "ImageContentSourcePolicy and ImageDigestMirrorSet merge as digest mirrors",
			objs: []Object{
				icsp("old", entry("quay.io/x", "old.example.com/x")),
				idms("new", entry("quay.io/x", "new.example.com/x")),
			},
			want: []Registry{{Prefix: "quay.io/x", Location: "quay.io/x", Mirrors: digestOnly("new.example.com/x", "old.example.com/x")}},
		},
		{
			name: "ImageContentSourcePolicy with a wildcard source",
			objs: []Object{icsp("wild", entry("*.example.com", "m.example.net/all"))},
			want: []Registry{{Prefix: "*.example.com", Mirrors: digestOnly("m.example.net/all")}},
		},
		{
			name: "nested sources stay separate rules; sorted by prefix",
			objs: []Object{
				itms("t", entry("quay.io/ns/repo", "m.example.com/repo"), entry("quay.io/ns", "m.example.com/ns")),
			},
			want: []Registry{
				{Prefix: "quay.io/ns", Location: "quay.io/ns", Mirrors: tagOnly("m.example.com/ns")},
				{Prefix: "quay.io/ns/repo", Location: "quay.io/ns/repo", Mirrors: tagOnly("m.example.com/repo")},
			},
		},
		{
			name: "objects of other kinds and repeated identical objects are noted",
			objs: []Object{
				{APIVersion: "v1", Kind: "ConfigMap", Name: "x", File: "in.yaml", Line: 3},
				itms("t", entry("quay.io/x", "m.example.com/x")),
				itms("t", entry("quay.io/x", "m.example.com/x")),
				itms("empty"),
			},
			want:  []Registry{{Prefix: "quay.io/x", Location: "quay.io/x", Mirrors: tagOnly("m.example.com/x")}},
			notes: []string{"ignored ConfigMap/x (in.yaml:3): not a mirror set", "ImageTagMirrorSet/t (in.yaml) repeats in.yaml; merged once", "ImageTagMirrorSet/empty (in.yaml) has no entries"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Merge(tc.objs)
			if err != nil {
				t.Fatalf("Merge: %v", err)
			}
			if !reflect.DeepEqual(c.Registries, tc.want) {
				t.Errorf("registries:\n got %+v\nwant %+v", c.Registries, tc.want)
			}
			for _, n := range tc.notes {
				if !slices.ContainsFunc(c.Notes, func(got string) bool { return strings.Contains(got, n) }) {
					t.Errorf("no note contains %q; notes: %q", n, c.Notes)
				}
			}
			if tc.notes == nil && len(c.Notes) > 0 {
				t.Errorf("unexpected notes: %q", c.Notes)
			}
		})
	}
}

func TestMergeErrors(t *testing.T) {
	if _, err := Merge(nil); !errors.Is(err, ErrNoMirrorSets) {
		t.Errorf("Merge(nil) = %v, want ErrNoMirrorSets", err)
	}
	if _, err := Merge([]Object{{APIVersion: "v1", Kind: "ConfigMap", Name: "x"}}); !errors.Is(err, ErrNoMirrorSets) {
		t.Errorf("Merge(ConfigMap) = %v, want ErrNoMirrorSets", err)
	}
	a := itms("t", entry("quay.io/x", "a.example.com/x"))
	b := itms("t", entry("quay.io/x", "b.example.com/x"))
	b.File, b.Line = "other.yaml", 4
	_, err := Merge([]Object{a, b})
	if err == nil || !strings.Contains(err.Error(), "ImageTagMirrorSet/t is defined twice with different content: in.yaml and other.yaml:4") {
		t.Errorf("Merge of two different t = %v", err)
	}
	// What the machine-config-operator refuses, naming both objects.
	for _, tc := range []struct {
		objs []Object
		msg  string
	}{
		{[]Object{idms("a", entry("quay.io/x", "a.example.com/x")), idms("b", never(entry("quay.io/x", "b.example.com/x")))},
			`conflicting mirrorSourcePolicy for source "quay.io/x": AllowContactingSource in ImageDigestMirrorSet/a (in.yaml) spec.imageDigestMirrors[0], NeverContactSource in ImageDigestMirrorSet/b (in.yaml) spec.imageDigestMirrors[0]`},
		// An entry without mirrors still counts.
		{[]Object{itms("t", never(entry("quay.io/x", "t.example.com/x"))), idms("d", entry("quay.io/x"))},
			`conflicting mirrorSourcePolicy for source "quay.io/x": NeverContactSource in ImageTagMirrorSet/t`},
		// An ImageContentSourcePolicy entry allows contacting the source.
		{[]Object{icsp("p", entry("quay.io/x", "p.example.com/x")), itms("t", never(entry("quay.io/x", "t.example.com/x")))},
			`AllowContactingSource in ImageContentSourcePolicy/p (in.yaml) spec.repositoryDigestMirrors[0], NeverContactSource in ImageTagMirrorSet/t`},
		{[]Object{itms("t", never(entry("quay.io/x", "m.example.com/x", "quay.io/x")))},
			`ImageTagMirrorSet/t (in.yaml) spec.imageTagMirrors[0]: mirrorSourcePolicy NeverContactSource, but the source "quay.io/x" is one of its mirrors`},
	} {
		if _, err := Merge(tc.objs); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Merge(%v) = %v, want an error containing %q", tc.objs, err, tc.msg)
		}
	}
	// The same name in another kind is another object.
	if _, err := Merge([]Object{a, idms("t", entry("quay.io/x", "b.example.com/x"))}); err != nil {
		t.Errorf("ITMS t and IDMS t: %v", err)
	}
}

// TestMergeOrdered pins the machine-config-operator's order, including the
// examples of its behaviour an operator sees: ties broken alphabetically,
// breadth first, whatever the order of the objects.
func TestMergeOrdered(t *testing.T) {
	const src = "src"
	for _, tc := range []struct {
		lists    [][]string
		want     []string
		conflict bool
	}{
		{lists: [][]string{{"a"}}, want: []string{"a"}},
		{lists: [][]string{{"b", "c"}, {"a", "b"}}, want: []string{"a", "b", "c"}},
		{lists: [][]string{{"a", "b"}, {"c"}}, want: []string{"a", "c", "b"}},
		{lists: [][]string{{"a", "b", "c"}, {"c", "d", "e"}}, want: []string{"a", "b", "c", "d", "e"}},
		{lists: [][]string{{"a", "c"}, {"b", "c"}, {"a", "b"}}, want: []string{"a", "b", "c"}},
		{lists: [][]string{{"zeta1", "zeta2"}, {"alpha1", "alpha2"}}, want: []string{"alpha1", "zeta1", "alpha2", "zeta2"}},
		{lists: [][]string{{"alpha1", "alpha2"}, {"zeta1", "zeta2"}}, want: []string{"alpha1", "zeta1", "alpha2", "zeta2"}},
		{lists: [][]string{{"m2", "m1"}, {"m1", "m2"}}, want: []string{"m1", "m2"}, conflict: true},
		{lists: [][]string{{"first", "zz"}, {"first", "aa"}}, want: []string{"first", "aa", "zz"}},
		{lists: [][]string{{"b", "a"}, {"a", "b"}}, want: []string{"a", "b"}, conflict: true},
		{lists: [][]string{{"a", "b", "c"}, {"c", "a"}}, want: []string{"a", "b", "c"}, conflict: true},
		// A repeated mirror is a loop too, broken the same way.
		{lists: [][]string{{"a", "a", "b"}}, want: []string{"a", "b"}, conflict: true},
		{lists: [][]string{{"x", "x"}, {"b"}}, want: []string{"b", src, "x"}, conflict: true},
		{lists: [][]string{{"a", src}}, want: []string{"a"}},
		{lists: [][]string{{"a", src, "b"}}, want: []string{"a", src, "b"}},
		{lists: [][]string{{src, "a"}, {"b"}}, want: []string{"b", src, "a"}},
	} {
		got, conflict := mergeOrdered(src, tc.lists)
		if !slices.Equal(got, tc.want) || conflict != tc.conflict {
			t.Errorf("mergeOrdered(%q) = %q, %v; want %q, %v", tc.lists, got, conflict, tc.want, tc.conflict)
		}
	}
}

// TestMergeWildcardSourceAsMirror: where the operator's order puts a
// wildcard source before one of its mirrors it would write "*.domain" as a
// mirror, which breaks every pull under it; import refuses instead.
func TestMergeWildcardSourceAsMirror(t *testing.T) {
	// x repeats: a loop, broken alphabetically, and "*" sorts first.
	_, err := Merge([]Object{icsp("p", entry("*.example.com", "x.example.net", "x.example.net"), entry("*.example.com", "b.example.net"))})
	if err == nil || !strings.Contains(err.Error(), `would write the wildcard source "*.example.com" as one of its own mirrors`) || !strings.Contains(err.Error(), "ImageContentSourcePolicy/p") {
		t.Errorf("Merge = %v, want the wildcard-as-mirror refusal naming the object", err)
	}
}
