package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/docker/config"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/pkg/tlsclientconfig"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage/pkg/configfile"
	"go.podman.io/storage/pkg/unshare"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The tag check's HEADs sit on the path of every checked pull, so they
// must cost one round trip. A containers/image client is made per request:
// a new connection, a TLS handshake, a /v2/ ping and, for a registry that
// wants a token, a token request before each HEAD. headClients instead
// keeps, per registry host and credentials, a go-containerregistry puller
// (which keeps the ping's answer and the bearer token per repository, and
// renews the token when the registry refuses it) over a keep-alive
// transport. What the request is allowed to do still follows
// containers/image's rules for the host: the TLS files of its certs.d
// directory, `insecure` (the only case that may fall back to plain HTTP),
// `blocked`, and the credentials of the auth file when the caller gave none.

// headClientTTL is how long one client (its connections, ping answers and
// tokens) is kept; headClientsMax bounds how many are kept at once.
const (
	headClientTTL  = 5 * time.Minute
	headClientsMax = 64
)

// headClients asks registries for a tag's digest with a HEAD, reusing
// what the last HEAD to the same host with the same credentials set up.
type headClients struct {
	authFile string
	agent    string
	// certsDir, if set, holds one directory of TLS files per host (as
	// containers/image's DockerPerHostCertDirPath); empty: the system's
	// certs.d search, as containers/image does.
	certsDir string
	now      func() time.Time

	mu      sync.Mutex
	clients map[headKey]*headClient
}

// headKey is what a kept client is specific to. creds is a hash of the
// credentials: they are not kept in the key.
type headKey struct {
	host     string
	insecure bool
	creds    [sha256.Size]byte
}

type headClient struct {
	puller    *remote.Puller
	transport *http.Transport // its connections are closed when the client is dropped
	created   time.Time
}

func (c *headClient) drop() { c.transport.CloseIdleConnections() }

func newHeadClients(authFile, agent string) *headClients {
	return &headClients{authFile: authFile, agent: agent, now: time.Now, clients: map[headKey]*headClient{}}
}

// Digest returns the digest the registry of ref answers for it (a tag or
// a digest), from a HEAD with auth (nil: the auth file's credentials for
// ref). sys is the registries configuration of the pull, for `insecure`
// and `blocked` of ref's host; insecure is the candidate's own (a
// mirror's `insecure`).
func (h *headClients) Digest(ctx context.Context, sys *types.SystemContext, ref reference.Named, insecure bool, auth *runtimeapi.AuthConfig) (digest.Digest, error) {
	host := reference.Domain(ref)
	reg, err := sysregistriesv2.FindRegistry(sys, ref.String())
	if err != nil {
		return "", fmt.Errorf("registries configuration for %s: %w", host, err)
	}
	insecure = insecure || (reg != nil && reg.Insecure)
	if reg != nil && reg.Blocked {
		return "", fmt.Errorf("registry %s is blocked by registries.conf rule prefix %q", host, reg.Prefix)
	}
	cfg, err := h.credentials(sys, ref, auth)
	if err != nil {
		return "", err
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	nref, err := name.ParseReference(ref.String(), opts...)
	if err != nil {
		return "", err
	}
	p, err := h.client(headKey{host: host, insecure: insecure, creds: credsHash(cfg)}, cfg)
	if err != nil {
		return "", err
	}
	desc, err := p.Head(ctx, nref)
	if err != nil {
		return "", err
	}
	return digest.Parse(desc.Digest.String())
}

// credentials is auth as go-containerregistry takes it, or the auth
// file's for ref when auth is nil.
func (h *headClients) credentials(sys *types.SystemContext, ref reference.Named, auth *runtimeapi.AuthConfig) (authn.AuthConfig, error) {
	if auth != nil {
		da, token := dockerAuth(auth)
		if da == nil {
			return authn.AuthConfig{RegistryToken: token}, nil
		}
		return authn.AuthConfig{Username: da.Username, Password: da.Password, IdentityToken: da.IdentityToken}, nil
	}
	lookup := *sys
	lookup.AuthFilePath = h.authFile
	c, err := config.GetCredentialsForRef(&lookup, ref)
	if err != nil {
		return authn.AuthConfig{}, fmt.Errorf("credentials for %s: %w", reference.Domain(ref), err)
	}
	return authn.AuthConfig{Username: c.Username, Password: c.Password, IdentityToken: c.IdentityToken}, nil
}

// credsHash tells credentials apart without keeping them.
func credsHash(c authn.AuthConfig) [sha256.Size]byte {
	h := sha256.New()
	for _, s := range []string{c.Username, c.Password, c.IdentityToken, c.RegistryToken} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// client returns the kept client for k, or a new one. Clients older than
// headClientTTL are dropped, and past headClientsMax the oldest goes.
func (h *headClients) client(k headKey, cfg authn.AuthConfig) (*remote.Puller, error) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[k]; ok && now.Sub(c.created) < headClientTTL {
		return c.puller, nil
	}
	var oldest *headKey
	for key, c := range h.clients {
		switch {
		case now.Sub(c.created) >= headClientTTL:
			c.drop()
			delete(h.clients, key)
		case oldest == nil || c.created.Before(h.clients[*oldest].created):
			oldest = &key
		}
	}
	if oldest != nil && len(h.clients) >= headClientsMax {
		h.clients[*oldest].drop()
		delete(h.clients, *oldest)
	}
	t, err := h.transport(k.host, k.insecure)
	if err != nil {
		return nil, err
	}
	var rt http.RoundTripper = t
	if !k.insecure {
		rt = httpsOnly{t}
	}
	var a authn.Authenticator = authn.Anonymous
	if cfg != (authn.AuthConfig{}) {
		a = authn.FromConfig(cfg)
	}
	p, err := remote.NewPuller(remote.WithTransport(rt), remote.WithAuth(a), remote.WithUserAgent(h.agent),
		// One try: the check is bounded by --tag-check-timeout, and a
		// failed HEAD is an answer (the pull goes on without it).
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}), remote.WithRetryStatusCodes())
	if err != nil {
		return nil, err
	}
	h.clients[k] = &headClient{puller: p, transport: t, created: now}
	return p, nil
}

// transport is the HTTP transport for host: its certs.d TLS files, and TLS
// verification off only for an insecure host. client refuses plain HTTP
// through it unless the host is insecure (go-containerregistry would try it
// for a loopback or private address).
func (h *headClients) transport(host string, insecure bool) (*http.Transport, error) {
	// registries.conf's `insecure = true` asks for no verification.
	tlsc := &tls.Config{InsecureSkipVerify: insecure}
	dir, err := h.certDir(host)
	if err != nil {
		return nil, err
	}
	if dir != "" {
		if err := tlsclientconfig.SetupCertificates(dir, tlsc); err != nil {
			return nil, fmt.Errorf("TLS files of %s in %s: %w", host, dir, err)
		}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tlsc
	t.MaxIdleConnsPerHost = 4
	return t, nil
}

// certDir is the certs.d directory of host, "" if there is none: the
// first of containers/image's search paths that has one.
func (h *headClients) certDir(host string) (string, error) {
	if h.certsDir != "" {
		return existing(filepath.Join(h.certsDir, host))
	}
	paths, err := configfile.GetSearchPaths(&configfile.File{
		Name: "certs", Extension: "d", DoNotUseExtensionForConfigName: true, UserId: unshare.GetRootlessUID(),
	})
	if err != nil {
		return "", err
	}
	for _, base := range append(paths.DropInDirectories, "/etc/docker/certs.d") {
		dir, err := existing(filepath.Join(base, host))
		if dir != "" || err != nil {
			return dir, err
		}
	}
	return "", nil
}

// existing is dir if it exists, "" if it does not.
func existing(dir string) (string, error) {
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return "", nil
		}
		return "", err
	}
	return dir, nil
}

// httpsOnly refuses plain-HTTP requests, so that a host not marked
// insecure is never sent anything (credentials above all) in clear.
type httpsOnly struct{ inner http.RoundTripper }

func (t httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" {
		return nil, fmt.Errorf("%s: plain HTTP to a registry not marked insecure in registries.conf", r.URL.Host)
	}
	return t.inner.RoundTrip(r)
}

// headAbsent tells a HEAD the registry answered with 404: it has no such
// manifest.
func headAbsent(ctx context.Context, err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode == http.StatusNotFound
	}
	return classifyProbe(ctx, err) == probeAbsent
}
