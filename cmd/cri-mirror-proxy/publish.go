package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	imgspec "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/pkg/docker/config"
	citypes "go.podman.io/image/v5/types"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
)

const publishHelp = `Usage: cri-mirror-proxy publish-index [flags] SOURCE_IMAGE MIRROR_REPOSITORY

Copy the index (or manifest list) of a multi-arch image, byte for byte, into
a companion artifact in MIRROR_REPOSITORY, tagged sha256-<hex of its
digest>.index. A mirror that holds only some platforms of the image (copied
with skopeo copy --multi-arch system, oc image mirror --filter-by-os, or a
registry that rewrites indexes) then still serves pulls by the index digest
through the proxy's digest substitution. Credentials come from the auth file,
for each host separately.

Example:
  cri-mirror-proxy publish-index quay.io/org/app@sha256:0123… mirror.corp:5000/quay/org/app

Flags:
`

type publishConfig struct {
	source, mirror string
	authFile       string
	insecure       bool
}

func parsePublish(args []string, stdout, stderr io.Writer) (publishConfig, error) {
	var c publishConfig
	f := newFlags("publish-index", "publish-index [flags] SOURCE_IMAGE MIRROR_REPOSITORY", stdout, stderr)
	f.intro = publishHelp
	f.argName = "arguments (SOURCE_IMAGE MIRROR_REPOSITORY)"
	f.String(&c.authFile, "auth-file", "", "auth.json with credentials for the source and mirror hosts (default: the containers/image search order)")
	f.Bool(&c.insecure, "insecure", false, "allow plain HTTP and unverified TLS to both registries")
	if err := f.parse(args, 2, 2); err != nil {
		return c, err
	}
	c.source, c.mirror = f.args[0], f.args[1]
	return c, nil
}

// publishIndex reads the source's index and writes the companion artifact.
func publishIndex(ctx context.Context, c publishConfig, stdout io.Writer) error {
	var opts []name.Option
	if c.insecure {
		opts = append(opts, name.Insecure)
	}
	src, err := name.ParseReference(c.source, opts...)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("SOURCE_IMAGE: %w", err)}
	}
	repo, err := name.NewRepository(c.mirror, opts...)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("MIRROR_REPOSITORY %q: %w (a repository, without tag or digest)", c.mirror, err)}
	}
	srcAuth, err := c.auth(src.Context().RegistryStr())
	if err != nil {
		return err
	}
	desc, err := remote.Get(src, remote.WithContext(ctx), remote.WithAuth(srcAuth))
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	if !desc.MediaType.IsIndex() {
		return fmt.Errorf("%s is a %s, not an index or manifest list: a pull by its digest needs no companion", src, desc.MediaType)
	}
	index := desc.Manifest
	d := digest.FromBytes(index)
	if want, ok := src.(name.Digest); ok && want.DigestStr() != d.String() {
		return fmt.Errorf("%s answered bytes with digest %s, not the digest asked for: nothing published", src, d)
	}

	mirrorAuth, err := c.auth(repo.RegistryStr())
	if err != nil {
		return err
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(mirrorAuth)}
	layer := static.NewLayer(index, desc.MediaType)
	cfg := static.NewLayer([]byte("{}"), types.MediaType(imgspecv1.MediaTypeEmptyJSON))
	for _, l := range []v1.Layer{cfg, layer} {
		if err := remote.WriteLayer(repo, l, ropts...); err != nil {
			return fmt.Errorf("upload to %s: %w", repo, err)
		}
	}
	manifest, err := json.Marshal(imgspecv1.Manifest{
		Versioned:    imgspec.Versioned{SchemaVersion: 2},
		MediaType:    imgspecv1.MediaTypeImageManifest,
		ArtifactType: string(desc.MediaType),
		Config:       imgspecv1.DescriptorEmptyJSON,
		Layers: []imgspecv1.Descriptor{{
			MediaType: string(desc.MediaType),
			Digest:    d,
			Size:      int64(len(index)),
		}},
		Annotations: map[string]string{imgspecv1.AnnotationRefName: src.String()},
	})
	if err != nil {
		return err
	}
	tag := repo.Tag(proxy.CompanionTag(d))
	if err := remote.Put(tag, rawManifest{b: manifest, mt: types.OCIManifestSchema1}, ropts...); err != nil {
		return fmt.Errorf("write %s: %w", tag, err)
	}
	fmt.Fprintf(stdout, "published the index %s of %s as %s (manifest sha256:%x)\n", d, src, tag, sha256.Sum256(manifest))
	return nil
}

// auth returns the credentials the auth file holds for host, or anonymous.
func (c publishConfig) auth(host string) (authn.Authenticator, error) {
	cred, err := config.GetCredentials(&citypes.SystemContext{AuthFilePath: c.authFile}, host)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", host, err)
	}
	if cred == (citypes.DockerAuthConfig{}) {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: cred.Username, Password: cred.Password, IdentityToken: cred.IdentityToken}), nil
}

// rawManifest is a manifest written exactly as serialised.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.b, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }
