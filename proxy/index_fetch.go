package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// maxIndexSize bounds the index bytes read from anywhere: the manifest size
// limit containers/image and distribution apply.
const maxIndexSize = 4 << 20

// registryIndexes reads manifests and companion artifacts through the
// containers/image docker transport, so every request honours the rule's
// `insecure`, certs.d and the auth file for the host it goes to, as the
// manifest probe does. The caller's credentials (kubelet's) are never used:
// containers/image may ask the rule's mirrors on its way to the source, and
// those must not see them.
type registryIndexes struct {
	timeout  time.Duration
	authFile string
	agent    string
}

// newRegistryIndexes returns a reader bounded by timeout per request.
// authFile is the proxy's own (empty: the containers/image default).
func newRegistryIndexes(timeout time.Duration, authFile, userAgent string) *registryIndexes {
	return &registryIndexes{timeout: timeout, authFile: authFile, agent: userAgent}
}

// Manifest implements indexReader: the manifest c.Ref names, as served.
func (r *registryIndexes) Manifest(ctx context.Context, res *resolver.Resolution, c resolver.Candidate) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	src, err := r.open(ctx, res, c, c.Ref)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	b, _, err := src.GetManifest(ctx, nil)
	return b, err
}

// Companion implements indexReader: the single layer of the artifact tagged
// tag in c's repository.
func (r *registryIndexes) Companion(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, tag string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	ref, err := reference.WithTag(reference.TrimNamed(c.Ref), tag)
	if err != nil {
		return nil, err
	}
	src, err := r.open(ctx, res, c, ref)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	b, _, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, err
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("companion %s: not an image manifest: %w", ref, err)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("companion %s: %d layers, want 1", ref, len(m.Layers))
	}
	l := m.Layers[0]
	if l.Size > maxIndexSize {
		return nil, fmt.Errorf("companion %s: layer of %d bytes, more than %d", ref, l.Size, maxIndexSize)
	}
	blob, _, err := src.GetBlob(ctx, types.BlobInfo{Digest: l.Digest, Size: l.Size}, none.NoCache)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	return readBounded(blob)
}

// open starts an image source for ref, contacted as candidate c.
func (r *registryIndexes) open(ctx context.Context, res *resolver.Resolution, c resolver.Candidate, ref reference.Named) (types.ImageSource, error) {
	dref, err := docker.NewReference(ref)
	if err != nil {
		return nil, err
	}
	sys := res.SystemContext()
	sys.AuthFilePath = r.authFile
	sys.DockerRegistryUserAgent = r.agent
	if c.Insecure {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return dref.NewImageSource(ctx, sys)
}

// readBounded reads at most maxIndexSize bytes, and fails on more.
func readBounded(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxIndexSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxIndexSize {
		return nil, errors.New("index larger than 4 MiB")
	}
	return b, nil
}
