package resolver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
)

// fileError is an error located in a configuration file. It unwraps to the
// underlying error (e.g. a toml.ParseError).
type fileError struct {
	file string
	line int // 0 if unknown
	msg  string
	err  error
}

func (e *fileError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.file, e.msg)
}

func (e *fileError) Unwrap() error { return e.err }

// decodeStrict decodes one file into the containers/image configuration
// type and rejects keys that type does not know. containers/image only logs
// them at debug level, so a typo such as pull_from_mirror would silently
// turn a mirror policy off. Keys are checked against the library's own
// struct, so every field it knows (unqualified-search-registries,
// short-name-mode, credential-helpers, additional-layer-store-auth-helper,
// aliases, ...) is accepted without a list to keep in sync.
func decodeStrict(file string) (*sysregistriesv2.V2RegistriesConf, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("registries configuration: %w", err)
	}
	var conf sysregistriesv2.V2RegistriesConf
	md, err := toml.Decode(string(data), &conf)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &fileError{file: file, line: errorLine(data, pe), msg: "invalid TOML: " + pe.Message, err: err}
		}
		// Type mismatches ("toml: line 3 (last key ...): incompatible
		// types") already say where.
		return nil, &fileError{file: file, msg: strings.TrimPrefix(err.Error(), "toml: "), err: err}
	}
	undecoded := md.Undecoded()
	if len(undecoded) == 0 {
		return &conf, nil
	}
	keys := leafKeys(undecoded)
	for _, k := range keys {
		if strings.HasPrefix(k, "registries.") {
			return nil, &fileError{file: file, msg: fmt.Sprintf("unknown key %q: the v1 format ([registries.search] etc.) is no longer supported, use [[registry]] tables (registries.conf v2)", k)}
		}
	}
	if len(keys) == 1 {
		return nil, &fileError{file: file, msg: fmt.Sprintf("unknown key %q", keys[0])}
	}
	quoted := make([]string, len(keys))
	for i, k := range keys {
		quoted[i] = fmt.Sprintf("%q", k)
	}
	return nil, &fileError{file: file, msg: "unknown keys " + strings.Join(quoted, ", ")}
}

// errorLine is the line of the byte the parser stopped at. The parser's own
// Line is one too far when the offending byte is a newline (an unclosed
// "[[registry.mirror]" is reported on the line after it).
func errorLine(data []byte, pe toml.ParseError) int {
	if pe.Position.Start < 0 || pe.Position.Start > len(data) {
		return pe.Position.Line
	}
	return 1 + bytes.Count(data[:pe.Position.Start], []byte("\n"))
}

// leafKeys drops undecoded tables whose children are reported as well, so
// "[foo] bar = 1" reports "foo.bar" once rather than "foo" and "foo.bar".
func leafKeys(keys []toml.Key) []string {
	all := make([]string, len(keys))
	for i, k := range keys {
		all[i] = k.String()
	}
	var out []string
	for _, s := range all {
		if !slices.ContainsFunc(all, func(o string) bool { return strings.HasPrefix(o, s+".") }) {
			out = append(out, s)
		}
	}
	return out
}

// anchoredDomain matches a registry host[:port], as containers/image checks
// unqualified-search-registries entries.
var anchoredDomain = regexp.MustCompile("^" + reference.DomainRegexp.String() + "$")

// validateRegistries refuses what containers/image accepts but can never
// work: a location (or prefix) that is not a registry host[/path]. The
// library checks only for URI schemes and empty mirror locations, so a
// location like "mirror" (no dot, no port: read as a Docker Hub namespace)
// or "mirror.example.com/Upper" would fail every pull through the rule, at
// pull time. It also refuses namespace-proxy, which the runtime behind the
// proxy cannot honour.
//
// Checks the library already makes (URI scheme, empty values, pull-from-mirror
// values, conflicts, wildcard format) are left to it, so its messages stay.
func validateRegistries(file string, regs []sysregistriesv2.Registry) error {
	seen := map[string]int{} // effective prefix → index of its first [[registry]]
	for i, r := range regs {
		// containers/image keeps one rule per prefix and silently drops the
		// others of the same file; a second rule for a prefix is a mistake
		// the operator should hear about. (A later drop-in replacing a rule
		// is the documented way to override it.)
		key := strings.TrimRight(r.Prefix, "/")
		if key == "" {
			key = strings.TrimRight(r.Location, "/")
		}
		if first, dup := seen[key]; dup && key != "" {
			return &fileError{file: file, msg: fmt.Sprintf("registry[%d]: prefix %q is already defined by registry[%d] in this file; merge the two", i, key, first)}
		}
		seen[key] = i
		rule := fmt.Sprintf("registry[%d]", i)
		if r.Prefix != "" {
			rule += fmt.Sprintf(" (prefix %q)", r.Prefix)
		} else if r.Location != "" {
			rule += fmt.Sprintf(" (location %q)", r.Location)
		}
		if !strings.HasPrefix(r.Prefix, "*.") {
			if err := checkLocation(r.Prefix); err != nil {
				return &fileError{file: file, msg: fmt.Sprintf("%s: prefix %q %v", rule, r.Prefix, err)}
			}
		}
		if err := checkLocation(r.Location); err != nil {
			return &fileError{file: file, msg: fmt.Sprintf("%s: location %q %v", rule, r.Location, err)}
		}
		if r.NamespaceProxy != "" {
			return &fileError{file: file, msg: fmt.Sprintf("%s: namespace-proxy is not supported: the runtime pulls the rewritten reference and cannot add the ns parameter", rule)}
		}
		for j, m := range r.Mirrors {
			if err := checkLocation(m.Location); err != nil {
				return &fileError{file: file, msg: fmt.Sprintf("%s: mirror[%d].location %q %v", rule, j, m.Location, err)}
			}
			if m.NamespaceProxy != "" {
				return &fileError{file: file, msg: fmt.Sprintf("%s: mirror[%d].namespace-proxy is not supported: the runtime pulls the rewritten reference and cannot add the ns parameter", rule, j)}
			}
		}
	}
	return nil
}

// checkLocation validates a location or non-wildcard prefix: a registry
// host[:port], optionally followed by a repository path (and, as the
// containers-registries.conf(5) format allows, a tag or digest). Values the
// library itself rejects (empty, http:// or https://) pass here.
func checkLocation(loc string) error {
	loc = strings.TrimRight(loc, "/") // as the library does
	if loc == "" || strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return nil
	}
	host, _, hasPath := strings.Cut(loc, "/")
	if !anchoredDomain.MatchString(host) {
		return fmt.Errorf("is not a registry host[:port][/path]: %q is not a valid host", host)
	}
	// reference.ParseNormalizedNamed (and so every pull) reads a first
	// component without ".", ":" or "localhost" as a Docker Hub namespace.
	if !strings.ContainsAny(host, ".:") && host != "localhost" {
		return fmt.Errorf("is not a registry host[:port][/path]: %q would be read as a Docker Hub namespace (a host needs a \".\", a \":port\" or to be \"localhost\")", host)
	}
	if !hasPath {
		return nil
	}
	ref, err := reference.Parse(loc)
	if err != nil {
		return fmt.Errorf("is not a registry host[:port][/path]: %v", err)
	}
	if named, ok := ref.(reference.Named); !ok || reference.Domain(named) != host {
		return fmt.Errorf("is not a registry host[:port][/path]")
	}
	return nil
}
