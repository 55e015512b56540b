package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// rulesConfig locates the registries.conf mirror rules; shared by serve,
// resolve and check-config.
type rulesConfig struct {
	file          string
	dir           string
	shortNameMode string
}

func (r *rulesConfig) register(f *flags) {
	f.String(&r.file, "registries-conf", resolver.DefaultConfPath, "registries.conf (v2) with the mirror rules; may be missing at its default path")
	f.String(&r.dir, "registries-conf-dir", resolver.DefaultConfDir, "directory of registries.conf drop-ins (*.conf)")
	f.String(&r.shortNameMode, "short-name-mode", "enforcing", `a short name that several unqualified-search-registries complete: "enforcing" refuses it as ambiguous, "disabled" tries each (CRI-O's short_name_mode; the registries.conf key is not used)`)
}

// load reads the rules. The default main file may be missing (only drop-ins
// then), as for CRI-O and Podman; a path given otherwise must exist. A file
// that is missing or wrong is bad input (exit code 2).
func (r *rulesConfig) load() (*resolver.Resolver, error) {
	file := r.file
	if file == resolver.DefaultConfPath {
		file = ""
	}
	rs, err := resolver.New(file, r.dir, resolver.WithShortNameMode(r.shortNameMode))
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	return rs, nil
}

// writeJSON writes v indented, for -o json.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// resolveReport is resolve's -o json output.
type resolveReport struct {
	Image              string         `json:"image"`
	Rule               string         `json:"rule,omitempty"`
	NeverContactSource bool           `json:"never_contact_source"`
	Candidates         []resolveCand  `json:"candidates"`
	Blocked            *blockedReport `json:"blocked,omitempty"`
	Notes              []string       `json:"notes"`
}

// blockedReport says why the rules refuse a pull.
type blockedReport struct {
	Rule   string `json:"rule"`
	File   string `json:"file,omitempty"`
	Reason string `json:"reason"`
}

type resolveCand struct {
	Ref string `json:"ref"`
	// Image is the name the candidate pulls: the image, or for a short
	// name the [aliases] entry or search-registry completion it took.
	Image          string `json:"image"`
	Source         bool   `json:"source"`
	Location       string `json:"location"`
	Rule           string `json:"rule,omitempty"`
	PullFromMirror string `json:"pull_from_mirror,omitempty"`
	Insecure       bool   `json:"insecure"`
}

// resolve prints the candidates a pull of image would try, in order, one per
// line: the reference first, then why. Notes on decisions the candidates do
// not show go to stderr, so stdout stays one candidate per line.
//
// With -o json it prints one object (resolveReport); a pull the rules refuse
// is reported there too (blocked), still with exit code 1.
func resolve(c serveConfig, stdout, stderr io.Writer) error {
	r, err := c.rules.load()
	if err != nil {
		return err
	}
	res, err := r.Resolve(c.args[0])
	if errors.Is(err, resolver.ErrInvalidReference) {
		return &exitError{code: 2, err: err}
	}
	var blocked *resolver.BlockedError
	if c.output == "json" && errors.As(err, &blocked) {
		if werr := writeJSON(stdout, resolveReport{Image: blocked.Image, Rule: blocked.Rule, Candidates: []resolveCand{},
			Blocked: &blockedReport{Rule: blocked.Rule, File: blocked.File, Reason: blocked.Reason}, Notes: []string{}}); werr != nil {
			return werr
		}
		return err
	}
	if err != nil {
		return err
	}
	notes := append([]string{}, res.Notes...)
	notes = append(notes, proxy.DescribeTagCheck(res, c.tagCheck)...)
	if c.substitute {
		platform, err := proxy.ParsePlatform(c.platform)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--platform: %w", err)}
		}
		notes = append(notes, proxy.DescribeSubstitution(res, c.indexDir, platform)...)
	}
	if c.output == "json" {
		rep := resolveReport{
			Image: res.Original.String(), Rule: res.Rule, NeverContactSource: res.NeverContactSource,
			Candidates: []resolveCand{}, Notes: notes,
		}
		for _, cand := range res.Candidates {
			rc := resolveCand{Ref: cand.Ref.String(), Image: cand.Image.String(), Source: cand.Source, Location: cand.Location, Rule: cand.Rule, Insecure: cand.Insecure}
			if !cand.Source {
				rc.PullFromMirror = cand.Policy
			}
			rep.Candidates = append(rep.Candidates, rc)
		}
		return writeJSON(stdout, rep)
	}
	for _, cand := range res.Candidates {
		fmt.Fprintln(stdout, cand.String())
	}
	for _, note := range notes {
		fmt.Fprintln(stderr, "note: "+note)
	}
	return nil
}

// checkEndpoints refuses a --listen or --runtime-endpoint that is not a
// unix socket, as bad input.
func checkEndpoints(c serveConfig) error {
	for _, e := range []struct{ name, endpoint string }{{"--listen", c.listen}, {"--runtime-endpoint", c.runtimeEndpoint}} {
		if _, err := proxy.SocketPath(e.endpoint); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("%s: %w", e.name, err)}
		}
	}
	return nil
}

// checkConfig validates the settings and the rules and prints both.
func checkConfig(c serveConfig, stdout io.Writer) error {
	if _, err := newLogger(c.logLevel, c.logFormat); err != nil {
		return err
	}
	if _, err := lookupGroup(c.listenGroup); err != nil {
		return err
	}
	if err := checkEndpoints(c); err != nil {
		return err
	}
	if _, err := proxy.ParsePlatform(c.platform); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("--platform: %w", err)}
	}
	r, err := c.rules.load()
	if err != nil {
		return err
	}
	if c.output == "json" {
		return writeJSON(stdout, struct {
			Settings   []setting                `json:"settings"`
			Registries resolver.Config          `json:"registries"`
			TagCheck   []resolver.TagCheckEntry `json:"tag_check"`
			Warnings   []string                 `json:"warnings"`
		}{c.settings(), r.Config(), c.tagCheck.Entries(), append([]string{}, r.Warnings()...)})
	}
	fmt.Fprintln(stdout, "settings:")
	c.printSettings(stdout)
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, r.Describe())
	fmt.Fprintln(stdout)
	printTagCheck(stdout, c.tagCheck, r.Config())
	for _, w := range r.Warnings() {
		fmt.Fprintln(stdout, "warning: "+w)
	}
	return nil
}
