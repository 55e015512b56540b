package proxy

import (
	"context"
	"slices"
	"strings"

	"go.podman.io/image/v5/docker/reference"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// Alias translation: the runtime stores an image pulled from a mirror under
// the mirror's name; callers see it under the name they asked for.

// lookupAlias finds the alias a caller's image name refers to: the exact
// name, its normalised form, or a digest of an aliased repository. What the
// table says about a name is cached until the table changes (nameCache):
// most calls are about names without an alias, and then cost one lock-free
// map read.
func (s *Server) lookupAlias(ctx context.Context, image string) (store.Alias, bool) {
	gen := s.aliases.Generation() // before reading the table: an entry is never newer than its tag
	e := s.names.entry(image, func(e *nameEntry) bool { return e.looked && e.gen == gen })
	if e == nil || !e.looked || e.gen != gen {
		e = s.lookupTable(image, e, gen)
	}
	if e.digest {
		dg := e.named.(reference.Digested)
		return s.lookupDigest(ctx, e.named.Name(), dg.Digest().String())
	}
	return e.alias, e.aliased
}

// lookupTable asks the alias table about image, and caches the answer with
// the table's generation gen. old is the name's previous entry, if any.
func (s *Server) lookupTable(image string, old *nameEntry, gen uint64) *nameEntry {
	if old == nil {
		old = s.names.named(image)
	}
	e := &nameEntry{named: old.named, name: old.name, looked: true, gen: gen}
	switch a, ok := s.aliases.Get(image); {
	case ok:
		e.alias, e.aliased = a, true
	case e.named == nil:
	case e.name != image:
		if a, ok := s.aliases.Get(e.name); ok {
			e.alias, e.aliased = a, true
			break
		}
		fallthrough
	default:
		// A digest of a repository without aliases (the common case) is
		// answered here; one with aliases only by the runtime.
		_, digested := e.named.(reference.Digested)
		e.digest = digested && len(s.aliases.ByRepository(e.named.Name())) > 0
	}
	s.names.put(image, e)
	return e
}

// lookupDigest answers "repo@digest" when the image was pulled by tag from a
// mirror: ImageStatus returned that digest under the original repository,
// so it must resolve again. The runtime knows the digest under the mirror's
// repository; ask it there. Digests of repositories without aliases (the
// common case) cost one map lookup.
func (s *Server) lookupDigest(ctx context.Context, repo, digest string) (store.Alias, bool) {
	tried := map[string]bool{}
	for _, a := range s.aliases.ByRepository(repo) {
		mirrored := repoOf(a.Mirror) + "@" + digest
		if tried[mirrored] {
			continue
		}
		tried[mirrored] = true
		resp, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: mirrored}})
		if err == nil && resp.GetImage() != nil {
			return store.Alias{Name: repo + "@" + digest, ImageID: resp.GetImage().GetId(), Mirror: mirrored}, true
		}
	}
	return store.Alias{}, false
}

// translate rewrites the runtime's view of an image into the caller's: the
// names the proxy created on mirrors are replaced by the names the caller
// asked for (a mirror name that was itself asked for stays, see
// keepOwnName). Images without aliases are left untouched (the common case,
// one map lookup). An image has one alias or a few: they are searched in
// place rather than indexed in maps, which would cost more to build than
// the searches do.
func (s *Server) translate(img *runtimeapi.Image) {
	if img == nil {
		return
	}
	aliases := s.aliases.ByImage(img.GetId())
	if len(aliases) == 0 {
		return
	}
	tags := make([]string, 0, len(img.RepoTags)+len(aliases))
	digests := make([]string, 0, len(img.RepoDigests)+len(aliases))
	for _, t := range img.RepoTags {
		// A mirror name stays when a client asked for it by itself.
		mirrored := slices.ContainsFunc(aliases, func(a store.Alias) bool { return a.Mirror == t })
		if !mirrored || s.aliases.Kept(t, img.GetId()) {
			tags = appendNew(tags, t)
		}
	}
	for _, a := range aliases {
		if strings.Contains(a.Name, "@") {
			digests = appendNew(digests, a.Name)
		} else {
			tags = appendNew(tags, a.Name)
		}
	}
	for _, d := range img.RepoDigests {
		repo, digest, ok := strings.Cut(d, "@")
		mirrored := false
		for _, a := range aliases {
			if ok && repoOf(a.Mirror) == repo {
				// The digest under each original repository of the mirror's.
				mirrored = true
				digests = appendNew(digests, repoOf(a.Name)+"@"+digest)
			}
		}
		if !mirrored {
			digests = appendNew(digests, d)
		}
	}
	img.RepoTags, img.RepoDigests = tags, digests
}

// repoOf strips the tag or digest of a normalised reference.
func repoOf(ref string) string { return store.Repository(ref) }

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// withImage copies spec with another image name, keeping annotations and the
// runtime handler.
func withImage(spec *runtimeapi.ImageSpec, image string) *runtimeapi.ImageSpec {
	return &runtimeapi.ImageSpec{
		Image:              image,
		Annotations:        spec.GetAnnotations(),
		UserSpecifiedImage: spec.GetUserSpecifiedImage(),
		RuntimeHandler:     spec.GetRuntimeHandler(),
	}
}
