package testenv

import (
	"context"
	"fmt"
	"runtime"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Arch is this machine's architecture, the one containerd pulls for.
const Arch = runtime.GOARCH

// Pushed is what a runtime reports for a pushed image.
type Pushed struct {
	ID       string // config digest: the CRI image id (for an index: of the Arch image)
	Digest   string // digest of the pushed manifest or index: the digest in repo_digests
	Instance string // for an index: digest of the Arch image's manifest; "" for an image
}

// User sets the config's User ("1002", "www-data:users", ...).
func User(user string) func(*v1.Config) { return func(c *v1.Config) { c.User = user } }

// Env adds an environment variable to the config: a distinct config, so a distinct image id.
func Env(kv string) func(*v1.Config) { return func(c *v1.Config) { c.Env = append(c.Env, kv) } }

// ForPlatform sets the config's platform to linux/arch (containerd checks it even for a
// single-platform manifest) and applies edits to the rest of the config.
func ForPlatform(img v1.Image, arch string, edits ...func(*v1.Config)) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	for _, edit := range edits {
		edit(&cf.Config)
	}
	return mutate.ConfigFile(img, cf)
}

// Random is an image of layers random (incompressible) layers of size bytes each for
// linux/arch: every call a new image, and a pull of it moves real data.
func Random(size, layers int64, arch string, edits ...func(*v1.Config)) (v1.Image, error) {
	img, err := random.Image(size, layers)
	if err != nil {
		return nil, err
	}
	return ForPlatform(img, arch, edits...)
}

// WithContent is a one-layer image for linux/arch whose layer holds /content.txt with content
// and a newline. The same content and edits give the same image (the same digest).
func WithContent(content, arch string, edits ...func(*v1.Config)) (v1.Image, error) {
	layer, err := crane.Layer(map[string][]byte{"content.txt": []byte(content + "\n")})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	return ForPlatform(img, arch, edits...)
}

// OfLayers is an image of the given layers for linux/arch: images that share a layer upload
// it once and containerd unpacks it once.
func OfLayers(arch string, layers []v1.Layer, edits ...func(*v1.Config)) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	return ForPlatform(img, arch, edits...)
}

// Index is a Docker manifest list of images, in this order, each under the platform of its
// config.
func Index(images ...v1.Image) (v1.ImageIndex, error) {
	var idx v1.ImageIndex = mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, img := range images {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture}},
		})
	}
	return idx, nil
}

// Describe says what a runtime on this machine reports for img or, for an index, for its
// Arch image.
func Describe(t remote.Taggable) (Pushed, error) {
	switch x := t.(type) {
	case v1.Image:
		id, err := x.ConfigName()
		if err != nil {
			return Pushed{}, err
		}
		dg, err := x.Digest()
		if err != nil {
			return Pushed{}, err
		}
		return Pushed{ID: id.String(), Digest: dg.String()}, nil
	case v1.ImageIndex:
		m, err := x.IndexManifest()
		if err != nil {
			return Pushed{}, err
		}
		dg, err := x.Digest()
		if err != nil {
			return Pushed{}, err
		}
		for _, d := range m.Manifests {
			if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != Arch {
				continue
			}
			img, err := x.Image(d.Digest)
			if err != nil {
				return Pushed{}, err
			}
			id, err := img.ConfigName()
			if err != nil {
				return Pushed{}, err
			}
			return Pushed{ID: id.String(), Digest: dg.String(), Instance: d.Digest.String()}, nil
		}
		return Pushed{}, fmt.Errorf("index %s has no linux/%s image", dg, Arch)
	}
	return Pushed{}, fmt.Errorf("describe: %T is neither an image nor an index", t)
}

// Push writes every image (or index) to its reference over plain HTTP, in parallel (jobs at
// a time); blobs shared by several images are uploaded once per repository.
func Push(ctx context.Context, images map[string]remote.Taggable, jobs int) error {
	todo := make(map[name.Reference]remote.Taggable, len(images))
	for ref, img := range images {
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		todo[r] = img
	}
	if err := remote.MultiWrite(todo, remote.WithContext(ctx), remote.WithJobs(max(1, jobs))); err != nil {
		if len(images) == 1 {
			for ref := range images {
				return fmt.Errorf("push %s: %w", ref, err)
			}
		}
		return fmt.Errorf("push %d images: %w", len(images), err)
	}
	return nil
}

// PushAs pushes one image (or index) under every ref and says what a runtime will report
// for it.
func PushAs(ctx context.Context, t remote.Taggable, refs ...string) (Pushed, error) {
	p, err := Describe(t)
	if err != nil {
		return Pushed{}, err
	}
	todo := make(map[string]remote.Taggable, len(refs))
	for _, r := range refs {
		todo[r] = t
	}
	return p, Push(ctx, todo, 4)
}
