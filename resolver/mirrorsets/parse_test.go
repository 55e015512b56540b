package mirrorsets

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

const itmsNeverContact = `# as "oc get imagetagmirrorset -o yaml" prints it
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata:
  name: release-tags
  creationTimestamp: "2025-01-07T10:00:00Z"
  generation: 1
  resourceVersion: "48213"
  uid: 0f4d2c4e-7a3b-4a57-9d52-1b1c0f4b2a11
spec:
  imageTagMirrors:
  - source: quay.io/openshift-release-dev
    mirrors:
    - mirror.example.com:5000/openshift-release-dev
    - backup.example.com/openshift-release-dev
    mirrorSourcePolicy: NeverContactSource
status: {}
`

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want []Object
	}{
		{
			name: "ImageTagMirrorSet with NeverContactSource and server fields",
			data: itmsNeverContact,
			want: []Object{{
				APIVersion: ConfigV1, Kind: ImageTagMirrorSet, Name: "release-tags", File: "in.yaml", Line: 2,
				Entries: []Entry{{
					Source:             "quay.io/openshift-release-dev",
					Mirrors:            []string{"mirror.example.com:5000/openshift-release-dev", "backup.example.com/openshift-release-dev"},
					MirrorSourcePolicy: NeverContactSource,
				}},
			}},
		},
		{
			name: "multi-document stream with empty documents and a wildcard",
			data: `---
apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata:
  name: digests
spec:
  imageDigestMirrors:
  - source: registry.redhat.io
    mirrors: [mirror.example.com/redhat]
---
---
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata: {name: gcr}
spec:
  imageTagMirrors:
  - source: "*.gcr.io"
    mirrors: [mirror.example.com/gcr]
...
`,
			want: []Object{
				{APIVersion: ConfigV1, Kind: ImageDigestMirrorSet, Name: "digests", File: "in.yaml", Line: 2,
					Entries: []Entry{{Source: "registry.redhat.io", Mirrors: []string{"mirror.example.com/redhat"}}}},
				{APIVersion: ConfigV1, Kind: ImageTagMirrorSet, Name: "gcr", File: "in.yaml", Line: 12,
					Entries: []Entry{{Source: "*.gcr.io", Mirrors: []string{"mirror.example.com/gcr"}}}},
			},
		},
		{
			name: "kind: List from oc get, with an object of another kind",
			data: `apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: operator.openshift.io/v1alpha1
  kind: ImageContentSourcePolicy
  metadata:
    name: release
  spec:
    repositoryDigestMirrors:
    - source: quay.io/openshift-release-dev/ocp-release
      mirrors:
      - mirror.example.com/ocp/release
      - mirror.example.com/ocp/release
- apiVersion: operators.coreos.com/v1alpha1
  kind: CatalogSource
  metadata:
    name: redhat-operators
    namespace: openshift-marketplace
  spec:
    image: mirror.example.com/redhat/redhat-operator-index:v4.16
`,
			want: []Object{
				{APIVersion: OperatorV1alpha1, Kind: ImageContentSourcePolicy, Name: "release", File: "in.yaml", Line: 6,
					// ICSP mirrors are not a set: a repeat is allowed (and merged away).
					Entries: []Entry{{Source: "quay.io/openshift-release-dev/ocp-release", Mirrors: []string{"mirror.example.com/ocp/release", "mirror.example.com/ocp/release"}}}},
				{APIVersion: "operators.coreos.com/v1alpha1", Kind: "CatalogSource", Name: "redhat-operators", File: "in.yaml", Line: 16},
			},
		},
		{
			name: "typed list from the API: items without apiVersion and kind",
			data: `{"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSetList", "metadata": {},
 "items": [{"metadata": {"name": "a"}, "spec": {"imageDigestMirrors": [{"source": "quay.io/a", "mirrors": ["m.example.com/a"], "mirrorSourcePolicy": "AllowContactingSource"}]}}]}`,
			want: []Object{{APIVersion: ConfigV1, Kind: ImageDigestMirrorSet, Name: "a", File: "in.yaml", Line: 2,
				Entries: []Entry{{Source: "quay.io/a", Mirrors: []string{"m.example.com/a"}, MirrorSourcePolicy: AllowContactingSource}}}},
		},
		{
			name: "YAML anchors, an entry without mirrors, an empty spec list",
			data: `apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata: {name: anchors}
spec:
  imageTagMirrors:
  - source: quay.io/a
    mirrors: &m [mirror.example.com/a]
  - source: quay.io/b
    mirrors: *m
  - source: quay.io/c
---
apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata: {name: empty}
spec: {}
`,
			want: []Object{
				{APIVersion: ConfigV1, Kind: ImageTagMirrorSet, Name: "anchors", File: "in.yaml", Line: 1, Entries: []Entry{
					{Source: "quay.io/a", Mirrors: []string{"mirror.example.com/a"}},
					{Source: "quay.io/b", Mirrors: []string{"mirror.example.com/a"}},
					{Source: "quay.io/c"},
				}},
				{APIVersion: ConfigV1, Kind: ImageDigestMirrorSet, Name: "empty", File: "in.yaml", Line: 12},
			},
		},
		{
			name: "empty input",
			data: "# nothing here\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("in.yaml", []byte(tc.data))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// object wraps one spec entry list into an object of the given kind.
func object(kind Kind, name, entries string) string {
	return "apiVersion: " + kind.apiVersion() + "\nkind: " + string(kind) + "\nmetadata:\n  name: " + name +
		"\nspec:\n  " + kind.specField() + ":\n" + entries
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want []string // each must appear in the error
	}{
		{"tag in source", object(ImageTagMirrorSet, "t", "  - source: quay.io/app:1.0\n    mirrors: [m.example.com/app]\n"),
			[]string{"in.yaml:7: ImageTagMirrorSet/t: spec.imageTagMirrors[0].source:", "must not contain a tag"}},
		{"digest in source", object(ImageDigestMirrorSet, "d", "  - source: quay.io/app@sha256:"+strings.Repeat("a", 64)+"\n    mirrors: [m.example.com/app]\n"),
			[]string{"ImageDigestMirrorSet/d: spec.imageDigestMirrors[0].source:", "must not contain a digest"}},
		{"tag in mirror", object(ImageDigestMirrorSet, "d", "  - source: quay.io/app\n    mirrors:\n    - m.example.com/app:latest\n"),
			[]string{"in.yaml:9: ImageDigestMirrorSet/d: spec.imageDigestMirrors[0].mirrors[0]:", "must not contain a tag"}},
		{"URL as mirror", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [\"https://m.example.com/app\"]\n"),
			[]string{"spec.imageTagMirrors[0].mirrors[0]", "without a URL scheme"}},
		{"upper case path in mirror", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [m.example.com/App]\n"),
			[]string{"spec.imageTagMirrors[0].mirrors[0]", "not a valid host[:port][/path]"}},
		{"wildcard mirror", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [\"*.example.com\"]\n"),
			[]string{"spec.imageTagMirrors[0].mirrors[0]", "wildcards are only allowed in a source"}},
		{"wildcard with path", object(ImageTagMirrorSet, "t", "  - source: \"*.example.com/ns\"\n    mirrors: [m.example.com/app]\n"),
			[]string{"spec.imageTagMirrors[0].source", `leading "*."`}},
		{"host that is a Docker Hub namespace", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [mirror/app]\n"),
			[]string{"spec.imageTagMirrors[0].mirrors[0]", "Docker Hub namespace"}},
		{"trailing slash", object(ImageTagMirrorSet, "t", "  - source: quay.io/app/\n    mirrors: [m.example.com/app]\n"),
			[]string{"spec.imageTagMirrors[0].source", `must not end with "/"`}},
		{"missing source", object(ImageTagMirrorSet, "t", "  - mirrors: [m.example.com/app]\n"),
			[]string{"in.yaml:7: ImageTagMirrorSet/t: spec.imageTagMirrors[0].source: required"}},
		{"null source", object(ImageTagMirrorSet, "t", "  - source:\n    mirrors: [m.example.com/app]\n"),
			[]string{"spec.imageTagMirrors[0].source: required"}},
		{"number as source", object(ImageTagMirrorSet, "t", "  - source: 5000\n    mirrors: [m.example.com/app]\n"),
			[]string{"spec.imageTagMirrors[0].source: must be a string"}},
		{"mirrors not a list", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: m.example.com/app\n"),
			[]string{"spec.imageTagMirrors[0].mirrors: must be a list"}},
		{"duplicate mirror in a set", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [m.example.com/app, m.example.com/app]\n"),
			[]string{"spec.imageTagMirrors[0].mirrors[1]", "duplicate value"}},
		{"misspelt mirrorSourcePolicy", object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [m.example.com/app]\n    mirrorsourcepolicy: NeverContactSource\n"),
			[]string{"in.yaml:9: ImageTagMirrorSet/t: spec.imageTagMirrors[0].mirrorsourcepolicy: unknown field"}},
		{"mirrorSourcePolicy in ICSP", object(ImageContentSourcePolicy, "p", "  - source: quay.io/app\n    mirrors: [m.example.com/app]\n    mirrorSourcePolicy: NeverContactSource\n"),
			[]string{"spec.repositoryDigestMirrors[0].mirrorSourcePolicy: unknown field"}},
		{"bad mirrorSourcePolicy", object(ImageDigestMirrorSet, "d", "  - source: quay.io/app\n    mirrors: [m.example.com/app]\n    mirrorSourcePolicy: Never\n"),
			[]string{"in.yaml:9:", "spec.imageDigestMirrors[0].mirrorSourcePolicy", `unsupported value "Never"`}},
		{"wrong spec field for the kind", object(ImageTagMirrorSet, "t", "")[:len(object(ImageTagMirrorSet, "t", ""))-len("  imageTagMirrors:\n")] + "  imageDigestMirrors: []\n",
			[]string{"spec.imageDigestMirrors: unknown field (ImageTagMirrorSet has only spec.imageTagMirrors)"}},
		{"missing spec", "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nmetadata:\n  name: t\n",
			[]string{"in.yaml:1: ImageTagMirrorSet/t: spec: required"}},
		{"missing name", "apiVersion: config.openshift.io/v1\nkind: ImageTagMirrorSet\nspec:\n  imageTagMirrors: []\n",
			[]string{"in.yaml:1: ImageTagMirrorSet: metadata.name: required"}},
		{"invalid name", object(ImageTagMirrorSet, "My_Mirrors", "  - source: quay.io/app\n    mirrors: [m.example.com/app]\n"),
			[]string{"metadata.name", "not a valid object name"}},
		{"wrong apiVersion", strings.Replace(object(ImageTagMirrorSet, "t", "  - source: quay.io/app\n    mirrors: [m.example.com/app]\n"), "config.openshift.io/v1", "operator.openshift.io/v1alpha1", 1),
			[]string{"ImageTagMirrorSet/t: apiVersion:", "ImageTagMirrorSet is config.openshift.io/v1"}},
		{"missing kind", "apiVersion: v1\nmetadata: {name: x}\n",
			[]string{"in.yaml:1: kind: required"}},
		{"not an object", "- just\n- a list\n",
			[]string{"in.yaml:1: not a Kubernetes object"}},
		{"YAML syntax error", "apiVersion: v1\nkind: [unclosed\n",
			[]string{"in.yaml: yaml: line"}},
		{"every problem is reported", object(ImageTagMirrorSet, "t", "  - source: quay.io/app:1\n    mirrors: [m.example.com/app]\n  - source: quay.io/b\n    mirrors: [\"http://m.example.com\"]\n"),
			[]string{"spec.imageTagMirrors[0].source", "spec.imageTagMirrors[1].mirrors[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Parse("in.yaml", []byte(tc.data))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", objs)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			for _, o := range objs {
				if o.Supported() {
					t.Errorf("invalid object returned: %+v", o)
				}
			}
		})
	}
}

func TestParseErrorIsObjectError(t *testing.T) {
	_, err := Parse("f.yaml", []byte(object(ImageTagMirrorSet, "t", "  - source: quay.io/app:1\n    mirrors: [m.example.com/app]\n")))
	var oe *ObjectError
	if !errors.As(err, &oe) {
		t.Fatalf("error %v is not an *ObjectError", err)
	}
	want := ObjectError{File: "f.yaml", Line: 7, Object: "ImageTagMirrorSet/t", Field: "spec.imageTagMirrors[0].source"}
	if oe.File != want.File || oe.Line != want.Line || oe.Object != want.Object || oe.Field != want.Field {
		t.Errorf("got %+v, want %+v", *oe, want)
	}
}

// A valid object next to an invalid one is still returned, so a caller can
// report every problem and see what would have been merged.
func TestParseKeepsValidObjects(t *testing.T) {
	data := itmsNeverContact + "---\n" + object(ImageTagMirrorSet, "bad", "  - source: quay.io/app:1\n    mirrors: [m.example.com/app]\n")
	objs, err := Parse("in.yaml", []byte(data))
	if err == nil || len(objs) != 1 || objs[0].Name != "release-tags" {
		t.Fatalf("Parse = %+v, %v; want release-tags and an error", objs, err)
	}
}

// Problems are reported in file order, though fields are checked before
// values.
func TestParseErrorsInFileOrder(t *testing.T) {
	_, err := Parse("in.yaml", []byte(object(ImageTagMirrorSet, "t",
		"  - source: quay.io/app:1\n    mirrors: [m.example.com/app]\n    mirrorSourcePolcy: NeverContactSource\n")))
	msg := err.Error()
	first, second := strings.Index(msg, "in.yaml:7:"), strings.Index(msg, "in.yaml:9:")
	if first < 0 || second < 0 || first > second {
		t.Errorf("errors not in file order:\n%s", msg)
	}
}
