package mirrorsets

import (
	"fmt"
	"regexp"
	"strings"
)

// ObjectError is a problem with one object: where it is, which object, which
// field. Parse returns them joined, one per problem found.
type ObjectError struct {
	File   string
	Line   int    // line of the offending node, 0 if unknown
	Object string // Kind/name, or the kind alone when the name is missing
	Field  string // e.g. spec.imageTagMirrors[0].source; "" for the object as a whole
	Msg    string
}

func (e *ObjectError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Object != "" {
		b.WriteString(": " + e.Object)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// The CRDs' patterns (config.openshift.io/v1 ImageMirror, and the source
// field of ImageTagMirrors and ImageDigestMirrors), built from their parts:
// a host of DNS labels with an optional port, then path components of lower
// case letters and digits joined by ".", "_", "__" or dashes. A source may
// instead be a wildcard "*.domain", which matches every host under domain.
const (
	dnsLabel      = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	hostPort      = dnsLabel + `(?:\.` + dnsLabel + `)*(?::[0-9]+)?`
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|-*)[a-z0-9]+)*`
)

var (
	locationPattern = regexp.MustCompile(`^` + hostPort + `(?:/` + pathComponent + `)*$`)
	wildcardPattern = regexp.MustCompile(`^\*(?:\.` + dnsLabel + `)+$`)
	// objectName is a Kubernetes object name (a DNS-1123 subdomain).
	objectName = regexp.MustCompile(`^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$`)
)

// checkName validates metadata.name.
func checkName(name string) string {
	switch {
	case name == "":
		return "required"
	case len(name) > 253 || !objectName.MatchString(name):
		return fmt.Sprintf("%q is not a valid object name (lower case letters, digits, '-' and '.', at most 253 characters)", name)
	}
	return ""
}

// checkScope validates a source (wildcard allowed) or a mirror (not). It
// returns "" when the value is fine, else why it is not, in words an
// operator can act on.
func checkScope(value string, wildcard bool) string {
	host, path, hasPath := strings.Cut(value, "/")
	switch {
	case value == "":
		return "required"
	case strings.Contains(value, "://"):
		return fmt.Sprintf("%q must be host[:port][/path], without a URL scheme", value)
	case strings.Contains(value, "@"):
		return fmt.Sprintf("%q must not contain a digest: mirror rules apply to repositories, not to single images", value)
	case hasPath && strings.Contains(path, ":"):
		return fmt.Sprintf("%q must not contain a tag: mirror rules apply to repositories, not to single images", value)
	case strings.Contains(value, "*"):
		if !wildcard {
			return fmt.Sprintf("%q: wildcards are only allowed in a source, not here", value)
		}
		if !wildcardPattern.MatchString(value) {
			return fmt.Sprintf("%q: a wildcard is only allowed as a leading \"*.\" on a host name without port or path, e.g. *.example.com", value)
		}
		return ""
	case strings.HasSuffix(value, "/"):
		return fmt.Sprintf("%q must not end with \"/\"", value)
	case !locationPattern.MatchString(value):
		return fmt.Sprintf("%q is not a valid host[:port][/path] (a path is made of lower case letters and digits separated by '/', '.', '_', '__' or '-')", value)
	case !strings.ContainsAny(host, ".:") && host != "localhost":
		// The CRD pattern accepts this, but every image reference reads a
		// first component without '.', ':' or "localhost" as a Docker Hub
		// namespace, so no pull would ever match or reach it.
		return fmt.Sprintf("%q: host %q has no '.' or ':port' and is not localhost, so image references read it as a Docker Hub namespace; write the registry host in full", value, host)
	}
	return ""
}

// validateEntry checks one entry as the CRD and the machine-config-operator
// do, calling fail for each problem. field is the entry's path, e.g.
// spec.imageTagMirrors[2]; lines holds the line of each value for messages.
func validateEntry(kind Kind, field string, e Entry, lines entryLines, fail func(line int, field, msg string)) {
	// Every kind accepts a wildcard source ("*.example.com"): the CRDs'
	// patterns allow it, and the operator renders it as a prefix.
	if msg := checkScope(e.Source, true); msg != "" {
		fail(lines.source, field+".source", msg)
	}
	seen := map[string]bool{}
	for i, m := range e.Mirrors {
		f := fmt.Sprintf("%s.mirrors[%d]", field, i)
		if msg := checkScope(m, false); msg != "" {
			fail(lines.mirror(i), f, msg)
			continue
		}
		// ImageTagMirrors and ImageDigestMirrors declare mirrors as a set,
		// so the API server refuses a repeated value; ICSP allows it.
		if seen[m] && kind != ImageContentSourcePolicy {
			fail(lines.mirror(i), f, fmt.Sprintf("duplicate value %q", m))
		}
		seen[m] = true
	}
	switch e.MirrorSourcePolicy {
	case "", NeverContactSource, AllowContactingSource:
	default:
		fail(lines.policy, field+".mirrorSourcePolicy", fmt.Sprintf("unsupported value %q: must be %q or %q", e.MirrorSourcePolicy, NeverContactSource, AllowContactingSource))
	}
}

// entryLines remembers where an entry's values are, for messages.
type entryLines struct {
	entry, source, policy int
	mirrors               []int
}

func (l entryLines) mirror(i int) int {
	if i < len(l.mirrors) {
		return l.mirrors[i]
	}
	return l.entry
}
