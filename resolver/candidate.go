package resolver

import (
	"fmt"
	"strings"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
)

// policySource is Candidate.Policy for the source registry.
const policySource = "source"

// Candidate is one place to pull an image from.
type Candidate struct {
	// Ref is what the runtime is asked to pull: fully qualified, tagged or
	// digested, with the host of Location as its domain.
	Ref reference.Named
	// Image is the fully qualified name this candidate pulls: the
	// Resolution's Original, or for a short name the alias or the
	// unqualified-search registry completion it was resolved from.
	Image reference.Named
	// Source is true for the rule's own location (or the original registry
	// when no rule matched), false for a mirror.
	Source bool
	// Location is the endpoint location as configured (for a wildcard rule
	// without location, and with no matching rule, the image's host). It
	// comes from the configuration, so it is a bounded metrics label.
	Location string
	// Insecure allows plain HTTP and unverified TLS for this endpoint.
	Insecure bool
	// Policy is the pull-from-mirror policy that admitted a mirror ("all",
	// "tag-only" or "digest-only"), or "source".
	Policy string
	// Rule is the prefix of the [[registry]] that produced the candidate,
	// "" when no rule matched.
	Rule string
}

// String renders the candidate as one line for the resolve command: the
// reference first, then tab-separated reasons.
func (c Candidate) String() string {
	var b strings.Builder
	if c.Ref != nil {
		b.WriteString(c.Ref.String())
	}
	if c.Source {
		b.WriteString("\tsource")
	} else {
		b.WriteString("\tmirror")
	}
	if c.Rule == "" {
		b.WriteString("\tno matching rule")
	} else {
		b.WriteString("\trule=" + c.Rule)
	}
	if !c.Source {
		b.WriteString("\tpull-from-mirror=" + c.Policy)
	}
	if c.Insecure {
		b.WriteString("\tinsecure")
	}
	return b.String()
}

// Resolution is the outcome of resolving one reference.
type Resolution struct {
	// Original is the reference as CRI runtimes normalise it: "nginx"
	// becomes docker.io/library/nginx:latest; a digest is kept (and a tag
	// given together with a digest is dropped). The caller's credentials
	// belong to its registry. A short name may be pulled under another
	// name ([aliases], unqualified-search-registries): see Candidate.Image.
	Original reference.Named
	// Rule is the prefix of the matched [[registry]], "" if none matched.
	Rule string
	// NeverContactSource is set when the rule's own location is blocked
	// and mirrors are left: only mirrors are tried (ImageTagMirrorSet's
	// mirrorSourcePolicy: NeverContactSource).
	NeverContactSource bool
	// Notes explain decisions that are not visible in the candidates
	// (a blocked rule whose rewritten location is still pulled, candidates
	// left out because their address is blocked), for the resolve command.
	Notes []string
	// Candidates in the order to try them; never empty.
	Candidates []Candidate

	// sys locates the files these candidates were resolved from.
	sys types.SystemContext
}

// SystemContext returns a new SystemContext naming the registries
// configuration these candidates were resolved from, exactly as it was
// loaded (a missing main file is os.DevNull, the drop-in directory is always
// set). containers/image keeps one parsed copy of the rules per process,
// keyed by these paths, and resolver loads refresh it: code that contacts a
// candidate through containers/image (the manifest probe) must start from
// this context to see the same rules, also after a reload. The caller may
// set the other fields of the copy.
func (r *Resolution) SystemContext() *types.SystemContext {
	sys := r.sys
	return &sys
}

// BlockedError reports a pull refused by the rules.
type BlockedError struct {
	Image  string // the normalised reference
	Rule   string // prefix of the matched [[registry]]
	Reason string
	File   string // the file that defined the rule, if known
}

func (e *BlockedError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("image %q is blocked by registries.conf rule prefix %q (%s)", e.Image, e.Rule, e.Reason)
	}
	return fmt.Sprintf("image %q is blocked by rule prefix %q in %s (%s)", e.Image, e.Rule, e.File, e.Reason)
}
