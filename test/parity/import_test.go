package parity

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	cisysregistriesv2 "github.com/containers/image/v5/pkg/sysregistriesv2"
	apicfgv1 "github.com/openshift/api/config/v1"
	apioperatorsv1alpha1 "github.com/openshift/api/operator/v1alpha1"
	"github.com/openshift/runtime-utils/pkg/registries"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver/mirrorsets"
)

// Pools for generated mirror sets: nested and wildcard sources, sources with
// ports, mirrors shared between sources, and a mirror equal to a source.
var (
	setSources = []string{
		"quay.io/ocp", "quay.io/ocp/release", "registry.corp:5000", "registry.corp:5000/team",
		"registry.k8s.io", "docker.io", "*.example.com", "*.a.example.com", "b.a.example.com/x",
	}
	setMirrors = []string{
		"alpha1.mirror.corp/m", "alpha2.mirror.corp/m", "zeta1.mirror.corp/m", "zeta2.mirror.corp/m",
		"first.mirror.corp", "aa.mirror.corp", "zz.mirror.corp:5000/m", "quay.io/ocp", "registry.k8s.io",
	}
)

type genEntry struct {
	source  string
	mirrors []string
	policy  string
}

type genObject struct {
	kind    mirrorsets.Kind
	name    string
	entries []genEntry
}

// genSet draws one to four objects of any kind. Within one object an entry's
// mirrors are distinct for the two kinds whose CRD declares them a set;
// ImageContentSourcePolicy may repeat one.
func genSet(rng *rand.Rand) []genObject {
	kinds := []mirrorsets.Kind{mirrorsets.ImageTagMirrorSet, mirrorsets.ImageDigestMirrorSet, mirrorsets.ImageContentSourcePolicy}
	var objs []genObject
	for i := range 1 + rng.IntN(4) {
		o := genObject{kind: kinds[rng.IntN(len(kinds))], name: fmt.Sprintf("set-%d", i)}
		for range 1 + rng.IntN(3) {
			e := genEntry{source: setSources[rng.IntN(len(setSources))]}
			for range rng.IntN(4) {
				m := setMirrors[rng.IntN(len(setMirrors))]
				if o.kind != mirrorsets.ImageContentSourcePolicy && slices.Contains(e.mirrors, m) {
					continue
				}
				e.mirrors = append(e.mirrors, m)
			}
			if o.kind != mirrorsets.ImageContentSourcePolicy {
				e.policy = []string{"", "", "AllowContactingSource", "NeverContactSource"}[rng.IntN(4)]
			}
			o.entries = append(o.entries, e)
		}
		objs = append(objs, o)
	}
	// Shuffled copies must give the same result: the operator's order does
	// not depend on the order of the objects.
	return objs
}

// yaml renders the objects as the files an operator would give to import.
func (o genObject) yaml() string {
	var b strings.Builder
	apiVersion, field := "config.openshift.io/v1", "imageTagMirrors"
	switch o.kind {
	case mirrorsets.ImageDigestMirrorSet:
		field = "imageDigestMirrors"
	case mirrorsets.ImageContentSourcePolicy:
		apiVersion, field = "operator.openshift.io/v1alpha1", "repositoryDigestMirrors"
	}
	fmt.Fprintf(&b, "apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\nspec:\n  %s:\n", apiVersion, o.kind, o.name, field)
	for _, e := range o.entries {
		fmt.Fprintf(&b, "  - source: %q\n", e.source)
		if len(e.mirrors) > 0 {
			b.WriteString("    mirrors:\n")
			for _, m := range e.mirrors {
				fmt.Fprintf(&b, "    - %q\n", m)
			}
		}
		if e.policy != "" {
			fmt.Fprintf(&b, "    mirrorSourcePolicy: %s\n", e.policy)
		}
	}
	return b.String()
}

// mcoInput converts the objects into the API types the
// machine-config-operator passes to EditRegistriesConfig.
func mcoInput(objs []genObject) (icsps []*apioperatorsv1alpha1.ImageContentSourcePolicy, idmss []*apicfgv1.ImageDigestMirrorSet, itmss []*apicfgv1.ImageTagMirrorSet) {
	for _, o := range objs {
		switch o.kind {
		case mirrorsets.ImageContentSourcePolicy:
			p := &apioperatorsv1alpha1.ImageContentSourcePolicy{}
			p.Name = o.name
			for _, e := range o.entries {
				p.Spec.RepositoryDigestMirrors = append(p.Spec.RepositoryDigestMirrors, apioperatorsv1alpha1.RepositoryDigestMirrors{Source: e.source, Mirrors: e.mirrors})
			}
			icsps = append(icsps, p)
		case mirrorsets.ImageDigestMirrorSet:
			s := &apicfgv1.ImageDigestMirrorSet{}
			s.Name = o.name
			for _, e := range o.entries {
				s.Spec.ImageDigestMirrors = append(s.Spec.ImageDigestMirrors, apicfgv1.ImageDigestMirrors{Source: e.source, Mirrors: imageMirrors(e.mirrors), MirrorSourcePolicy: apicfgv1.MirrorSourcePolicy(e.policy)})
			}
			idmss = append(idmss, s)
		default:
			s := &apicfgv1.ImageTagMirrorSet{}
			s.Name = o.name
			for _, e := range o.entries {
				s.Spec.ImageTagMirrors = append(s.Spec.ImageTagMirrors, apicfgv1.ImageTagMirrors{Source: e.source, Mirrors: imageMirrors(e.mirrors), MirrorSourcePolicy: apicfgv1.MirrorSourcePolicy(e.policy)})
			}
			itmss = append(itmss, s)
		}
	}
	return icsps, idmss, itmss
}

func imageMirrors(ms []string) []apicfgv1.ImageMirror {
	out := make([]apicfgv1.ImageMirror, len(ms))
	for i, m := range ms {
		out[i] = apicfgv1.ImageMirror(m)
	}
	return out
}

// mcoRefuses restates the checks the machine-config-operator makes before it
// renders anything (pkg/controller/container-runtime-config/helpers.go,
// validateRegistriesConfScopes): one mirrorSourcePolicy per source across
// every entry of every kind (an ImageContentSourcePolicy entry, or an empty
// policy, being AllowContactingSource), and no NeverContactSource entry that
// lists its source as a mirror. runtime-utils itself does not check them.
func mcoRefuses(objs []genObject) bool {
	policy := map[string]string{}
	for _, o := range objs {
		for _, e := range o.entries {
			p := e.policy
			if p == "" {
				p = "AllowContactingSource"
			}
			if prev, ok := policy[e.source]; ok && prev != p {
				return true
			}
			policy[e.source] = p
			if p == "NeverContactSource" && slices.Contains(e.mirrors, e.source) {
				return true
			}
		}
	}
	return false
}

// mcoRender renders registries.conf as the operator does: its base template
// decoded into the containers/image type, edited by EditRegistriesConfig with
// the cluster's mirror sets, encoded with BurntSushi/toml.
func mcoRender(t *testing.T, objs []genObject) string {
	t.Helper()
	conf := cisysregistriesv2.V2RegistriesConf{}
	if _, err := toml.Decode("unqualified-search-registries = [\"registry.access.redhat.com\", \"docker.io\"]\nshort-name-mode = \"\"\n", &conf); err != nil {
		t.Fatal(err)
	}
	icsps, idmss, itmss := mcoInput(objs)
	if err := registries.EditRegistriesConfig(&conf, nil, nil, icsps, idmss, itmss); err != nil {
		t.Fatalf("EditRegistriesConfig: %v", err)
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(conf); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// proxyImport runs what the import command runs: parse, merge, render the
// drop-in; then loads it beside an empty registries.conf.
func proxyImport(t *testing.T, objs []genObject) (*resolver.Resolver, string, error) {
	t.Helper()
	var docs []string
	for _, o := range objs {
		docs = append(docs, o.yaml())
	}
	parsed, err := mirrorsets.Parse("sets.yaml", []byte(strings.Join(docs, "---\n")))
	if err != nil {
		t.Fatalf("Parse refuses a set the CRDs accept: %v\n%s", err, strings.Join(docs, "---\n"))
	}
	c, err := mirrorsets.Merge(parsed)
	if err != nil {
		return nil, "", err
	}
	data, err := c.TOML()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	main, drop := filepath.Join(dir, "registries.conf"), filepath.Join(dir, "registries.conf.d")
	if err := os.WriteFile(main, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(drop, "50-mirror-sets.conf"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := resolver.New(main, drop)
	if err != nil {
		t.Fatalf("the proxy refuses its own import: %v\n%s", err, data)
	}
	return r, string(data), nil
}

// setReferences are pulled under every generated set: each source's own
// repositories (wildcards expanded, host-only sources also with a port),
// nested ones, and each mirror's, by tag and by digest.
func setReferences() []string {
	var bases []string
	for _, s := range setSources {
		if host, ok := strings.CutPrefix(s, "*."); ok {
			bases = append(bases, "x."+host, "x.y."+host, "x."+host+":5000")
			continue
		}
		bases = append(bases, s)
		if !strings.ContainsAny(s, "/:") {
			bases = append(bases, s+":5000")
		}
	}
	bases = append(bases, setMirrors...)
	var out []string
	for _, b := range bases {
		for _, repo := range []string{"/app", "/team/app"} {
			out = append(out, b+repo+":v1", b+repo+"@"+testDigest)
		}
	}
	return out
}

// TestImportMatchesMachineConfigOperator compares the pulls the import's
// drop-in gives with those of the registries.conf the operator renders from
// the same objects, and the refusals.
func TestImportMatchesMachineConfigOperator(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 2))
	refs := setReferences()
	const sets = 400
	compared, refused, stricter := 0, 0, 0
	for i := range sets {
		objs := genSet(rng)
		r, ours, err := proxyImport(t, objs)
		if mcoRefuses(objs) {
			if err == nil {
				t.Errorf("set %d: the operator refuses it, import accepts it:\n%s", i, dump(objs))
			}
			refused++
			continue
		}
		mco := mcoRender(t, objs)
		if err != nil {
			// The one place import is deliberately stricter (README,
			// compatibility): the operator would write a wildcard source
			// as a mirror of itself, which breaks every pull under it.
			if strings.Contains(mco, "location = \"*.") && strings.Contains(err.Error(), "as one of its own mirrors") {
				stricter++
				continue
			}
			t.Errorf("set %d: import refuses a set the operator accepts: %v\n%s", i, err, dump(objs))
			continue
		}
		sys := confDir(t, mco)
		if _, err := sysregistriesv2.TryUpdatingCache(sys); err != nil {
			t.Fatalf("set %d: containers/image refuses the operator's registries.conf: %v\n%s", i, err, mco)
		}
		for _, image := range refs {
			named, err := reference.ParseDockerRef(image)
			if err != nil {
				t.Fatalf("corpus reference %q: %v", image, err)
			}
			want := libraryOutcome(t, sys, named)
			got := proxyOutcome(t, r, image)
			if !got.equal(want) {
				t.Errorf("set %d, %s: import gives %s, the operator's file %s\nobjects:\n%s\nimport:\n%s\noperator:\n%s", i, image, got, want, dump(objs), ours, mco)
			}
			compared++
		}
		// The objects in the reverse order: the same drop-in.
		rev := slices.Clone(objs)
		slices.Reverse(rev)
		if _, again, err := proxyImport(t, rev); err != nil || registriesPart(again) != registriesPart(ours) {
			t.Errorf("set %d: import depends on the order of the objects (%v):\n%s\nreversed:\n%s", i, err, ours, again)
		}
		if t.Failed() {
			return
		}
	}
	t.Logf("%d decisions compared over %d sets (%d refused by both, %d refused by import only: wildcard source as its own mirror)", compared, sets, refused, stricter)
	if refused > sets/2 {
		t.Errorf("%d of %d generated sets are refused: the generator no longer exercises the merge", refused, sets)
	}
}

// registriesPart drops the header, which names the objects in input order.
func registriesPart(dropIn string) string {
	if i := strings.Index(dropIn, "\n[[registry]]"); i >= 0 {
		return dropIn[i:]
	}
	return ""
}

func dump(objs []genObject) string {
	var docs []string
	for _, o := range objs {
		docs = append(docs, o.yaml())
	}
	return strings.Join(docs, "---\n")
}
