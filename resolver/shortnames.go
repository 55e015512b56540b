package resolver

import (
	"errors"
	"fmt"
	"strings"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/shortnames"
	"go.podman.io/image/v5/types"
)

// noAliasCache is given to containers/image as the short-name alias cache:
// a path in procfs, which never exists and cannot be created. That cache
// (short-name-aliases.conf) records the choices Podman users make at its
// prompt; a node daemon has no prompt, and its decisions must come from the
// registries.conf files alone.
const noAliasCache = "/proc/self/cri-mirror-proxy-no-short-name-alias-cache.conf"

// resolveShort resolves an unqualified name as CRI-O's PullImage does (its
// CandidatesForPotentiallyShortImageName calls shortnames.Resolve with the
// daemon's short_name_mode): an [aliases] entry wins; otherwise the name is
// completed with each unqualified-search-registries entry, and in enforcing
// mode more than one completion is refused as ambiguous, since a daemon
// cannot prompt (CRI-O: "short name mode is enforcing, but image name %s
// returns ambiguous list"). The library is asked in disabled mode, which
// never prompts nor looks at a terminal, and the enforcing rule is applied
// here.
//
// When the files say nothing for the name (no alias, no search registries)
// the name is completed with docker.io/library/, as containerd and kubelet
// do, where CRI-O would refuse it: every configuration written before the
// proxy read short names keeps working.
//
// Each completion is resolved through the mirror rules on its own, and the
// candidates are tried completion by completion, as CRI-O tries them.
func (rs *ruleSet) resolveShort(image string, dockerDefault reference.Named, mode types.ShortNameMode) (*Resolution, error) {
	sys := rs.sys // a copy: the same cache entry, with short-name settings
	disabled := types.ShortNameModeDisabled
	sys.ShortNameMode = &disabled
	sys.UserShortNameAliasConfPath = noAliasCache
	resolved, err := shortnames.Resolve(&sys, image)
	if err != nil {
		if len(rs.searchRegistries) == 0 {
			res, err := rs.resolve(dockerDefault)
			if res != nil {
				res.Notes = append(res.Notes, fmt.Sprintf("short name %q: no [aliases] entry and no unqualified-search-registries: completed with docker.io as CRI runtimes do", image))
			}
			return res, err
		}
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidReference, image, err)
	}
	var names []reference.Named
	for _, c := range resolved.PullCandidates {
		// As CRI-O, drop a tag given together with a digest.
		named, err := reference.ParseDockerRef(c.Value.String())
		if err != nil {
			return nil, fmt.Errorf("%w %q: short name completed as %q: %v", ErrInvalidReference, image, c.Value, err)
		}
		names = append(names, named)
	}
	desc := resolved.Description()
	if len(names) > 1 && mode == types.ShortNameModeEnforcing {
		qualified := make([]string, len(names))
		for i, n := range names {
			qualified[i] = n.String()
		}
		return nil, fmt.Errorf("%w %q: short name mode is enforcing and the name is ambiguous: %s (%s); use a fully qualified name, an [aliases] entry, or --short-name-mode=disabled",
			ErrInvalidReference, image, strings.Join(qualified, ", "), desc)
	}

	// Each completion on its own, in order; the first one's rule names the
	// pull. A completion that is blocked or cannot be rewritten is skipped,
	// as CRI-O goes on to the next candidate when one fails.
	var res *Resolution
	var firstErr error
	for _, named := range names {
		r, err := rs.resolve(named)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if res == nil {
			res = r
			res.Original = dockerDefault
			continue
		}
		res.Candidates = append(res.Candidates, r.Candidates...)
		res.Notes = append(res.Notes, r.Notes...)
	}
	if res == nil {
		return nil, firstErr
	}
	note := fmt.Sprintf("short name %q: %s", image, desc)
	if firstErr != nil {
		var be *BlockedError
		if errors.As(firstErr, &be) || errors.Is(firstErr, ErrInvalidReference) {
			note += "; skipped: " + firstErr.Error()
		}
	}
	res.Notes = append([]string{note}, res.Notes...)
	return res, nil
}
