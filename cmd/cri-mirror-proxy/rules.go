package main

import (
	"fmt"
	"io"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// rulesConfig locates the registries.conf mirror rules; shared by serve,
// resolve and check-config.
type rulesConfig struct {
	file string
	dir  string
}

func (r *rulesConfig) register(f *flags) {
	f.String(&r.file, "registries-conf", resolver.DefaultConfPath, "registries.conf (v2) with the mirror rules; may be missing at its default path")
	f.String(&r.dir, "registries-conf-dir", resolver.DefaultConfDir, "directory of registries.conf drop-ins (*.conf)")
}

// load reads the rules. The default main file may be missing (only drop-ins
// then), as for CRI-O and Podman; a path given otherwise must exist.
func (r *rulesConfig) load() (*resolver.Resolver, error) {
	file := r.file
	if file == resolver.DefaultConfPath {
		file = ""
	}
	return resolver.New(file, r.dir)
}

// resolve prints the candidates a pull of image would try, in order, one per
// line: the reference first, then why. Notes on decisions the candidates do
// not show go to stderr, so stdout stays one candidate per line.
func resolve(c serveConfig, stdout, stderr io.Writer) error {
	r, err := c.rules.load()
	if err != nil {
		return err
	}
	res, err := r.Resolve(c.args[0])
	if err != nil {
		return err
	}
	for _, cand := range res.Candidates {
		fmt.Fprintln(stdout, cand.String())
	}
	for _, note := range res.Notes {
		fmt.Fprintln(stderr, "note: "+note)
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
	for name, endpoint := range map[string]string{"--listen": c.listen, "--runtime-endpoint": c.runtimeEndpoint} {
		if _, err := proxy.SocketPath(endpoint); err != nil {
			return &exitError{code: 1, err: fmt.Errorf("%s: %w", name, err)}
		}
	}
	r, err := c.rules.load()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "settings:")
	c.describe(stdout)
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, r.Describe())
	for _, w := range r.Warnings() {
		fmt.Fprintln(stdout, "warning: "+w)
	}
	return nil
}
