package proxy

import (
	"fmt"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/docker/config"
	"go.podman.io/image/v5/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Credentials finds the credentials configured for the registry host of ref.
// A nil AuthConfig and nil error mean "pull anonymously".
type Credentials interface {
	Lookup(ref reference.Named) (*runtimeapi.AuthConfig, error)
}

type noCredentials struct{}

func (noCredentials) Lookup(reference.Named) (*runtimeapi.AuthConfig, error) { return nil, nil }

// AuthFile looks credentials up the way Podman and CRI-O do: auth.json and
// docker config.json (and credential helpers), keyed by registry host and
// repository. path "" uses the containers/image default search order.
type AuthFile struct {
	sys *types.SystemContext
}

// NewAuthFile returns credentials from the auth file at path ("" = default
// locations).
func NewAuthFile(path string) *AuthFile {
	return &AuthFile{sys: &types.SystemContext{AuthFilePath: path}}
}

// Lookup implements Credentials.
func (a *AuthFile) Lookup(ref reference.Named) (*runtimeapi.AuthConfig, error) {
	c, err := config.GetCredentialsForRef(a.sys, ref)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", reference.Domain(ref), err)
	}
	if c.Username == "" && c.Password == "" && c.IdentityToken == "" {
		return nil, nil
	}
	// containerd parses ServerAddress as a URL and hands the credentials
	// only to that host: with a scheme, "host:port" parses as a host.
	return &runtimeapi.AuthConfig{
		Username:      c.Username,
		Password:      c.Password,
		IdentityToken: c.IdentityToken,
		ServerAddress: "https://" + reference.Domain(ref),
	}, nil
}
