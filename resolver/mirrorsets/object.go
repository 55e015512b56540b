// Package mirrorsets converts OpenShift mirror-set objects into a
// registries.conf v2 drop-in that cri-mirror-proxy (and CRI-O, Podman) read.
//
// Three kinds are understood:
//
//   - ImageTagMirrorSet (config.openshift.io/v1): mirrors used for tag
//     references only, rendered as pull-from-mirror = "tag-only";
//   - ImageDigestMirrorSet (config.openshift.io/v1): mirrors used for digest
//     references only, rendered as pull-from-mirror = "digest-only";
//   - ImageContentSourcePolicy (operator.openshift.io/v1alpha1), the older
//     form of ImageDigestMirrorSet: digest-only, no mirrorSourcePolicy.
//
// Objects are merged the way OpenShift's machine-config-operator renders them
// on a node (openshift/runtime-utils pkg/registries): one [[registry]] per
// source; the mirrors of every object naming that source combined in the
// operator's order (each object's relative order kept, ties broken
// alphabetically, so the order of the objects does not matter); digest
// mirrors before tag mirrors; and mirrorSourcePolicy: NeverContactSource
// turning the whole [[registry]] into blocked = true, which in registries.conf
// v2 means "use the mirrors, never the source". Sets the operator refuses
// (conflicting mirrorSourcePolicy for one source, NeverContactSource with the
// source among its mirrors) are refused here too.
//
// The package has its own minimal types rather than importing
// github.com/openshift/api, whose module brings in most of k8s.io; the field
// names follow the upstream types named on each declaration.
package mirrorsets

import "fmt"

// API versions of the kinds read here.
const (
	ConfigV1         = "config.openshift.io/v1"
	OperatorV1alpha1 = "operator.openshift.io/v1alpha1"
)

// Kind is the kind of a mirror-set object.
type Kind string

// The kinds this package converts.
const (
	ImageTagMirrorSet        Kind = "ImageTagMirrorSet"
	ImageDigestMirrorSet     Kind = "ImageDigestMirrorSet"
	ImageContentSourcePolicy Kind = "ImageContentSourcePolicy"
)

// apiVersion is the only API version each kind is accepted with.
func (k Kind) apiVersion() string {
	if k == ImageContentSourcePolicy {
		return OperatorV1alpha1
	}
	return ConfigV1
}

// specField is the spec field that holds the kind's entries.
func (k Kind) specField() string {
	switch k {
	case ImageTagMirrorSet:
		return "imageTagMirrors"
	case ImageDigestMirrorSet:
		return "imageDigestMirrors"
	default:
		return "repositoryDigestMirrors"
	}
}

// TagOnly reports whether the kind's mirrors serve tag references (true) or
// digest references (false).
func (k Kind) TagOnly() bool { return k == ImageTagMirrorSet }

func knownKind(kind string) (Kind, bool) {
	switch k := Kind(kind); k {
	case ImageTagMirrorSet, ImageDigestMirrorSet, ImageContentSourcePolicy:
		return k, true
	}
	return "", false
}

// MirrorSourcePolicy is an entry's mirrorSourcePolicy
// (config.openshift.io/v1 MirrorSourcePolicy).
type MirrorSourcePolicy string

// The values the CRDs allow. Empty means AllowContactingSource.
const (
	NeverContactSource    MirrorSourcePolicy = "NeverContactSource"
	AllowContactingSource MirrorSourcePolicy = "AllowContactingSource"
)

// Object is one object read from a file. Parse returns objects of other
// kinds too, so that Merge can say what it ignored; Supported tells them
// apart.
type Object struct {
	APIVersion string
	Kind       Kind
	Name       string // metadata.name
	// File and Line say where the object was read: the name given to Parse
	// and the line its document or list item starts on.
	File string
	Line int
	// Entries are spec.imageTagMirrors, spec.imageDigestMirrors or
	// spec.repositoryDigestMirrors, in order.
	Entries []Entry
}

// Entry is one source and its mirrors: config.openshift.io/v1
// ImageTagMirrors and ImageDigestMirrors, operator.openshift.io/v1alpha1
// RepositoryDigestMirrors (which has no MirrorSourcePolicy).
type Entry struct {
	Source             string
	Mirrors            []string
	MirrorSourcePolicy MirrorSourcePolicy
}

// Supported reports whether the object is one of the mirror-set kinds.
func (o Object) Supported() bool {
	_, ok := knownKind(string(o.Kind))
	return ok
}

// String names the object as kubectl does: Kind/name.
func (o Object) String() string { return fmt.Sprintf("%s/%s", o.Kind, o.Name) }

// Where is the object's position, file:line.
func (o Object) Where() string {
	if o.Line > 0 {
		return fmt.Sprintf("%s:%d", o.File, o.Line)
	}
	return o.File
}
