// Package resolver turns an image reference into the ordered list of places
// to pull it from, following the mirror rules of a registries.conf v2 file
// and its drop-in directory (the files CRI-O and Podman read).
//
// Parsing, validation, merging of drop-ins and the prefix→location rewrite
// are done by containers/image (pkg/sysregistriesv2); this package adds a
// stricter validation pass (unknown keys, unusable locations), keeps its own
// snapshot of the rules so that Resolve never touches the file system, and
// reloads atomically: a failed reload leaves the previous rules in place.
package resolver

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/shortnames"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// Default locations, the same ones CRI-O and Podman use for a root process.
const (
	DefaultConfPath = "/etc/containers/registries.conf"
	DefaultConfDir  = "/etc/containers/registries.conf.d"
)

// maxReferenceLength bounds the input before any regular expression sees it.
// A valid reference is at most a 255-byte name, a 128-byte tag and a digest,
// so this leaves ample room while keeping hostile input cheap to reject.
const maxReferenceLength = 1024

// ErrInvalidReference is returned (wrapped, with detail) when an image
// reference cannot be parsed or cannot be rewritten by the matching rule.
var ErrInvalidReference = errors.New("invalid image reference")

// Resolver resolves image references against a loaded set of rules. It is
// safe for concurrent use; Resolve does no I/O.
type Resolver struct {
	confPath string
	confDir  string
	// mainOptional is true when confPath was defaulted: containers/image
	// tolerates a missing main file only in its default search, and so do we.
	mainOptional bool

	// shortNameMode is how an ambiguous short name is handled, as CRI-O's
	// own short_name_mode setting (it overrides the files' short-name-mode).
	shortNameMode types.ShortNameMode

	reloadMu sync.Mutex // serialises Reload so an older load never overwrites a newer one
	rules    atomic.Pointer[ruleSet]
}

// Option configures a Resolver.
type Option func(*Resolver) error

// WithShortNameMode sets how a short name that several
// unqualified-search-registries complete is handled: "enforcing" (the
// default) refuses it as ambiguous, "disabled" tries each in turn. These are
// the values of CRI-O's short_name_mode, which likewise decides in place of
// the registries.conf short-name-mode key.
func WithShortNameMode(mode string) Option {
	return func(r *Resolver) error {
		switch mode {
		case "enforcing", "":
			r.shortNameMode = types.ShortNameModeEnforcing
		case "disabled":
			r.shortNameMode = types.ShortNameModeDisabled
		default:
			return fmt.Errorf("short-name mode %q: want \"enforcing\" or \"disabled\"", mode)
		}
		return nil
	}
}

// New loads and validates the registries configuration. An empty confPath
// means DefaultConfPath and an empty confDir means DefaultConfDir.
//
// A missing main file is handled as containers/image handles it: when the
// path was given explicitly it is an error (a typo must not silently disable
// every mirror), when it was defaulted it means "no main file" and only the
// drop-in directory (which may also be missing) is read.
func New(confPath, confDir string, opts ...Option) (*Resolver, error) {
	r := &Resolver{confPath: confPath, confDir: confDir, shortNameMode: types.ShortNameModeEnforcing}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	if r.confPath == "" {
		r.confPath = DefaultConfPath
		r.mainOptional = true
	}
	if r.confDir == "" {
		r.confDir = DefaultConfDir
	}
	rs, err := load(r.confPath, r.confDir, r.mainOptional)
	if err != nil {
		return nil, err
	}
	r.rules.Store(rs)
	return r, nil
}

// Check validates the configuration without keeping it.
func Check(confPath, confDir string, opts ...Option) error {
	_, err := New(confPath, confDir, opts...)
	return err
}

// Reload reads the configuration again. On error the rules loaded before
// keep serving, and the error names the file and the problem.
func (r *Resolver) Reload() error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	rs, err := load(r.confPath, r.confDir, r.mainOptional)
	if err != nil {
		return err
	}
	r.rules.Store(rs)
	return nil
}

// Describe returns a human-readable summary of the rules in effect.
func (r *Resolver) Describe() string {
	return r.rules.Load().describe()
}

// Resolve normalises image the way CRI runtimes do and returns the ordered
// pull candidates. It returns an error wrapping ErrInvalidReference for a
// malformed reference and a *BlockedError when the rules refuse the pull.
//
// A reference with both a tag and a digest is treated as the digest alone:
// the tag cannot be verified against the digest, containerd's CRI plugin
// drops it as well, and containers/image refuses to pull such references.
func (r *Resolver) Resolve(image string) (*Resolution, error) {
	if len(image) > maxReferenceLength {
		return nil, fmt.Errorf("%w %.64q...: longer than %d bytes", ErrInvalidReference, image, maxReferenceLength)
	}
	// ParseDockerRef = ParseNormalizedNamed + TagNameOnly, dropping the tag
	// when a digest is present.
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidReference, image, err)
	}
	rs := r.rules.Load()
	if shortnames.IsShortName(image) {
		return rs.resolveShort(image, named, r.shortNameMode)
	}
	return rs.resolve(named)
}

// resolve computes the candidates for an already normalised reference the
// way containers/image does for a pull (docker_image_src.go newImageSource):
// the matching rule's PullSourcesFromReference, mirrors first and the rule's
// location last, each tried only if the address it contacts is not under a
// blocked rule (docker_client.go newDockerClient looks the contacted
// reference up again). So "blocked" refuses addresses, not images: a blocked
// rule whose location is rewritten elsewhere still pulls from that location.
func (rs *ruleSet) resolve(named reference.Named) (*Resolution, error) {
	res := &Resolution{Original: named, sys: rs.sys}
	// containers/image looks pulls up by repository name (docker_image_src.go
	// calls FindRegistry with ref.Name()), so a prefix that carries a tag or
	// digest never matches a pull; we do the same to pick the same rule.
	rule := rs.match(named.Name())
	if rule == nil {
		res.Candidates = []Candidate{{
			Ref:      named,
			Image:    named,
			Source:   true,
			Location: reference.Domain(named),
			Policy:   policySource,
		}}
		return res, nil
	}
	res.Rule = rule.Prefix

	sources, err := rule.PullSourcesFromReference(named)
	if err != nil {
		return nil, fmt.Errorf("%w %q: rule prefix %q cannot rewrite it: %v", ErrInvalidReference, named.String(), rule.Prefix, err)
	}
	var refused []string // candidates whose address falls under a blocked rule
	sourceRefused := false
	for i, src := range sources {
		isSource := i == len(sources)-1 // the library appends the location last
		c := Candidate{
			Ref:      src.Reference,
			Image:    named,
			Source:   isSource,
			Location: src.Endpoint.Location,
			Insecure: src.Endpoint.Insecure,
			Policy:   policySource,
			Rule:     rule.Prefix,
		}
		if !isSource {
			c.Policy = mirrorPolicy(rule, src.Endpoint)
		} else if c.Location == "" {
			// A wildcard rule without location keeps the reference as is.
			c.Location = reference.Domain(src.Reference)
		}
		if other := rs.match(c.Ref.Name()); other != nil && other.Blocked {
			what := "mirror " + c.Ref.String()
			if isSource {
				what = "source " + c.Ref.String()
				sourceRefused = true
			}
			refused = append(refused, fmt.Sprintf("%s is under blocked rule prefix %q", what, other.Prefix))
			continue
		}
		if isSource && rule.Blocked {
			res.Notes = append(res.Notes, fmt.Sprintf("rule prefix %q has blocked = true, but its location %q is not blocked: containers/image checks blocked against the address it contacts, so the location is still pulled", rule.Prefix, rule.Location))
		}
		res.Candidates = append(res.Candidates, c)
	}
	res.NeverContactSource = sourceRefused && len(res.Candidates) > 0
	if len(res.Candidates) == 0 {
		return nil, rs.blocked(named, rule, blockedReason(rule, named, len(sources)-1, refused))
	}
	if len(refused) > 0 {
		res.Notes = append(res.Notes, "not tried: "+strings.Join(refused, "; "))
	}
	return res, nil
}

// blocked builds the error for a pull with no candidate left.
func (rs *ruleSet) blocked(named reference.Named, rule *sysregistriesv2.Registry, reason string) *BlockedError {
	return &BlockedError{Image: named.String(), Rule: rule.Prefix, File: rs.origin[rule.Prefix], Reason: reason}
}

// mirrorPolicy reports the pull-from-mirror policy that let a mirror through.
func mirrorPolicy(rule *sysregistriesv2.Registry, ep sysregistriesv2.Endpoint) string {
	switch {
	case rule.MirrorByDigestOnly:
		return sysregistriesv2.MirrorByDigestOnly
	case ep.PullFromMirror == "":
		return sysregistriesv2.MirrorAll
	default:
		return ep.PullFromMirror
	}
}

// blockedReason explains why no candidate is left.
func blockedReason(rule *sysregistriesv2.Registry, named reference.Named, applicable int, refused []string) string {
	switch {
	case rule.Blocked && len(rule.Mirrors) == 0:
		return "blocked = true, no mirrors"
	case rule.Blocked && applicable == 0:
		kind := "tag"
		if _, ok := named.(reference.Canonical); ok {
			kind = "digest"
		}
		return fmt.Sprintf("blocked = true: the source may not be contacted and none of its %d mirror(s) applies to a %s reference (pull-from-mirror / mirror-by-digest-only)",
			len(rule.Mirrors), kind)
	default:
		return "every candidate is blocked: " + strings.Join(refused, "; ")
	}
}
