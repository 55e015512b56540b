package proxy

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// imageNames are the image fields a runtime reports for one container, in
// ContainerStatus, ListContainers and container events alike. containerd
// reports the image's first tag in image and its first repo digest in ref;
// kubelet shows them as the pod's containerStatuses[].image and imageID.
type imageNames struct {
	image   string // image.image: a tag, a digest reference or an image id
	specRef string // image.image_ref
	ref     string // image_ref: a repo digest or an image id
	id      string // image_id: the image id (newer runtimes)
	user    string // image.user_specified_image: what the pod asked for
}

// originals returns n with every name the proxy created on a mirror replaced
// by the original name it was pulled for: a mirror tag or digest reference
// becomes the alias's name, a digest under a mirror repository moves to the
// original repository (containerd reports "mirror/repo@sha256:…" for an
// image pulled as "mirror/repo:tag"). Image ids and names of images pulled
// without a mirror are left as they are. changed is false when nothing had
// to change, the common case, which costs a few map lookups.
func (s *Server) originals(n imageNames) (out imageNames, changed bool) {
	aliases := s.containerAliases(n)
	if len(aliases) == 0 {
		return n, false
	}
	byMirror := make(map[string][]string, len(aliases)) // mirror reference → original names
	repos := make(map[string][]string, len(aliases))    // mirror repository → original repositories
	for _, a := range aliases {
		if a.Mirror == "" {
			continue
		}
		byMirror[a.Mirror] = appendNew(byMirror[a.Mirror], a.Name)
		mr := repoOf(a.Mirror)
		repos[mr] = appendNew(repos[mr], repoOf(a.Name))
	}

	// Where one mirror name stands for several originals, prefer what the
	// pod asked for, then the name reported for the image, so that image
	// and image_ref name the same repository.
	want := ""
	if named, ok := s.names.normalize(n.user); ok {
		want = named.String()
	}
	if want == "" {
		if names := byMirror[n.image]; len(names) > 0 {
			want = names[0]
		}
	}
	rename := func(name string) string {
		if names := byMirror[name]; len(names) > 0 {
			return prefer(names, want)
		}
		if repo, digest, ok := strings.Cut(name, "@"); ok {
			if origs := repos[repo]; len(origs) > 0 {
				return prefer(origs, repoOf(want)) + "@" + digest
			}
		}
		return name
	}
	out = imageNames{image: rename(n.image), specRef: rename(n.specRef), ref: rename(n.ref), id: rename(n.id), user: n.user}
	return out, out != n
}

// containerAliases finds the aliases concerned by a container's image
// fields: those whose mirror reference is reported, those of the reported
// image id, and the other aliases of the same images.
func (s *Server) containerAliases(n imageNames) []store.Alias {
	var aliases []store.Alias
	add := func(as []store.Alias) {
		for _, a := range as {
			if !slices.ContainsFunc(aliases, func(b store.Alias) bool { return b.Name == a.Name }) {
				aliases = append(aliases, a)
			}
		}
	}
	for i, name := range []string{n.image, n.specRef, n.ref} {
		// An image id is no mirror reference; a name reported twice is
		// looked up once.
		if name != "" && !isImageID(name) && (i < 1 || name != n.image) && (i < 2 || name != n.specRef) {
			add(s.aliases.ByMirror(name))
		}
	}
	ids := make([]string, 0, 2)
	for _, id := range []string{n.id, n.image, n.ref} {
		if id != "" && !slices.Contains(ids, id) && (id == n.id || isImageID(id)) {
			ids = append(ids, id)
		}
	}
	for _, a := range aliases {
		if !slices.Contains(ids, a.ImageID) {
			ids = append(ids, a.ImageID)
		}
	}
	for _, id := range ids {
		add(s.aliases.ByImage(id))
	}
	return aliases
}

func prefer(list []string, want string) string {
	if slices.Contains(list, want) {
		return want
	}
	return list[0]
}

// translateContainerStatus rewrites the image fields of a decoded status.
func (s *Server) translateContainerStatus(st *runtimeapi.ContainerStatus) {
	if st == nil {
		return
	}
	n := imageNames{image: st.GetImage().GetImage(), specRef: st.GetImage().GetImageRef(), ref: st.GetImageRef(), id: st.GetImageId(), user: st.GetImage().GetUserSpecifiedImage()}
	out, changed := s.originals(n)
	if !changed {
		return
	}
	if st.Image != nil {
		st.Image.Image, st.Image.ImageRef = out.image, out.specRef
	}
	st.ImageRef, st.ImageId = out.ref, out.id
}

// translateContainer rewrites the image fields of a decoded listing entry.
func (s *Server) translateContainer(c *runtimeapi.Container) {
	if c == nil {
		return
	}
	n := imageNames{image: c.GetImage().GetImage(), specRef: c.GetImage().GetImageRef(), ref: c.GetImageRef(), id: c.GetImageId(), user: c.GetImage().GetUserSpecifiedImage()}
	out, changed := s.originals(n)
	if !changed {
		return
	}
	if c.Image != nil {
		c.Image.Image, c.Image.ImageRef = out.image, out.specRef
	}
	c.ImageRef, c.ImageId = out.ref, out.id
}

// imageFields are the field numbers of the image fields in an undecoded
// ContainerStatus or Container.
type imageFields struct{ spec, ref, id protowire.Number }

var (
	containerStatusFields = imageFields{spec: 8, ref: 9, id: 17} // runtimeapi.ContainerStatus
	containerFields       = imageFields{spec: 4, ref: 5, id: 10} // runtimeapi.Container
	imageSpecImage        = protowire.Number(1)                  // runtimeapi.ImageSpec.image
	imageSpecRef          = protowire.Number(20)                 // runtimeapi.ImageSpec.image_ref
)

// rawNamesChange reports whether the undecoded message msg (a
// ContainerStatus or Container, per f) names a mirror. It runs on every
// answer, so it converts each distinct name once (containerd often reports
// the image id in several fields) and leaves out the pod's own image name,
// which only picks among originals once a mirror name is found.
func (s *Server) rawNamesChange(msg []byte, f imageFields) bool {
	m := bytesFields(msg, f.spec, f.ref, f.id)
	spec := bytesFields(m[0], imageSpecImage, imageSpecRef)
	var n imageNames
	n.image = once(spec[0])
	n.specRef = once(spec[1], n.image)
	n.ref = once(m[1], n.image, n.specRef)
	n.id = once(m[2], n.image, n.specRef, n.ref)
	_, changed := s.originals(n)
	return changed
}

// bytesFields is bytesField for up to three fields at once, in one pass
// over b: the last occurrence of each, nil when absent.
func bytesFields(b []byte, nums ...protowire.Number) (v [3][]byte) {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return [3][]byte{}
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, t, b)
		if m < 0 {
			return [3][]byte{}
		}
		if t == protowire.BytesType {
			for i, num := range nums {
				if n == num {
					v[i], _ = protowire.ConsumeBytes(b[:m])
				}
			}
		}
		b = b[m:]
	}
	return v
}

// once returns b as a string, reusing an equal one of seen.
func once(b []byte, seen ...string) string {
	for _, s := range seen {
		if s == string(b) {
			return s
		}
	}
	return string(b)
}

// anyRawNamesChange reports whether any occurrence of the repeated field num
// of msg (each a ContainerStatus or Container, per f) names a mirror.
func (s *Server) anyRawNamesChange(msg []byte, num protowire.Number, f imageFields) bool {
	for len(msg) > 0 {
		n, t, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return false
		}
		msg = msg[l:]
		m := protowire.ConsumeFieldValue(n, t, msg)
		if m < 0 {
			return false
		}
		if n == num && t == protowire.BytesType {
			if v, _ := protowire.ConsumeBytes(msg[:m]); s.rawNamesChange(v, f) {
				return true
			}
		}
		msg = msg[m:]
	}
	return false
}
