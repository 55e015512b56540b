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
// name, its normalised form, or a digest of an aliased repository.
func (s *Server) lookupAlias(ctx context.Context, image string) (store.Alias, bool) {
	if a, ok := s.aliases.Get(image); ok {
		return a, true
	}
	named, ok := s.names.normalize(image)
	if !ok {
		return store.Alias{}, false
	}
	if name := named.String(); name != image {
		if a, ok := s.aliases.Get(name); ok {
			return a, true
		}
	}
	if dg, ok := named.(reference.Digested); ok {
		return s.lookupDigest(ctx, named.Name(), dg.Digest().String())
	}
	return store.Alias{}, false
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
// one map lookup).
func (s *Server) translate(img *runtimeapi.Image) {
	if img == nil {
		return
	}
	aliases := s.aliases.ByImage(img.GetId())
	if len(aliases) == 0 {
		return
	}
	mirrorTags := make(map[string]bool, len(aliases))
	repos := make(map[string][]string, len(aliases)) // mirror repository → original repositories
	for _, a := range aliases {
		mirrorTags[a.Mirror] = true
		mr, or := repoOf(a.Mirror), repoOf(a.Name)
		if !slices.Contains(repos[mr], or) {
			repos[mr] = append(repos[mr], or)
		}
	}

	var tags, digests []string
	for _, t := range img.RepoTags {
		// A mirror name stays when a client asked for it by itself.
		if !mirrorTags[t] || s.aliases.Kept(t, img.GetId()) {
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
		origs, mirrored := repos[repo]
		if !ok || !mirrored {
			digests = appendNew(digests, d)
			continue
		}
		for _, or := range origs {
			digests = appendNew(digests, or+"@"+digest)
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
