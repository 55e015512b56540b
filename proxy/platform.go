package proxy

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/types"
)

// Platform is the operating system, architecture and variant a digest
// substitution picks from an index. Empty fields are detected on the node
// the way containers/image does it (GOOS, GOARCH, the CPU variant for arm).
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// ParsePlatform reads "os/arch" or "os/arch/variant" (the form of docker
// --platform and crictl). "" is the node's own platform.
func ParsePlatform(s string) (Platform, error) {
	if s == "" {
		return Platform{}, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return Platform{}, fmt.Errorf("platform %q: %w", s, err)
	}
	if p.OS == "" || p.Architecture == "" || p.OSVersion != "" {
		return Platform{}, fmt.Errorf("platform %q: want os/architecture[/variant], e.g. linux/arm64/v8", s)
	}
	return Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}, nil
}

// String renders the platform as os/arch[/variant]; for the node's own
// platform GOOS/GOARCH (a detected variant is not shown).
func (p Platform) String() string {
	if p == (Platform{}) {
		return runtime.GOOS + "/" + runtime.GOARCH
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// systemContext carries the choice to containers/image's instance matcher.
func (p Platform) systemContext() *types.SystemContext {
	return &types.SystemContext{OSChoice: p.OS, ArchitectureChoice: p.Architecture, VariantChoice: p.Variant}
}

// errNotIndex: the bytes are a manifest of one image, not an index.
var errNotIndex = errors.New("not an image index or manifest list")

// chooseChild picks from an OCI index or Docker manifest list the manifest
// the runtime would pull for platform p, with containers/image's matcher
// (variants in order of compatibility; entries of other platforms, and
// attestations listed as unknown/unknown, never match). It returns the
// child's digest and platform.
func chooseChild(index []byte, p Platform) (digest.Digest, string, error) {
	mt := manifest.GuessMIMEType(index)
	if !manifest.MIMETypeIsMultiImage(mt) {
		return "", "", errNotIndex
	}
	list, err := manifest.ListFromBlob(index, mt)
	if err != nil {
		return "", "", fmt.Errorf("parse index: %w", err)
	}
	child, err := list.ChooseInstance(p.systemContext())
	if err != nil {
		return "", "", fmt.Errorf("no manifest for platform %s: the index lists %s", p, strings.Join(listedPlatforms(list), ", "))
	}
	return child, instancePlatform(list, child), nil
}

// listedPlatforms names the platforms of an index's entries, for errors.
func listedPlatforms(list manifest.List) []string {
	var out []string
	for _, d := range list.Instances() {
		if p := instancePlatform(list, d); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return []string{"no manifests"}
	}
	return out
}

func instancePlatform(list manifest.List, d digest.Digest) string {
	in, err := list.Instance(d)
	if err != nil || in.ReadOnly.Platform == nil {
		return "no platform"
	}
	pl := in.ReadOnly.Platform
	if pl.OS == "" && pl.Architecture == "" {
		return "no platform"
	}
	return Platform{OS: pl.OS, Architecture: pl.Architecture, Variant: pl.Variant}.String()
}
