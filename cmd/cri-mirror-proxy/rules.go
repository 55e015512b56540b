package main

import (
	"fmt"
	"io"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// rulesConfig locates the registries.conf mirror rules; shared by serve,
// resolve and check-config.
type rulesConfig struct {
	file string
	dir  string
}

func (r *rulesConfig) register(f *flags) {
	f.String(&r.file, "registries-conf", "/etc/containers/registries.conf", "registries.conf (v2) with the mirror rules")
	f.String(&r.dir, "registries-conf-dir", "/etc/containers/registries.conf.d", "directory of registries.conf drop-ins (*.conf)")
}

func parseRules(args []string, name string, stderr io.Writer) (rulesConfig, error) {
	var r rulesConfig
	f := newFlags(name, name+" [flags]", stderr)
	r.register(f)
	return r, f.parse(args, 0)
}

type resolveConfig struct {
	rules rulesConfig
	image string
}

func parseResolve(args []string, stderr io.Writer) (resolveConfig, error) {
	var c resolveConfig
	f := newFlags("resolve", "resolve [flags] IMAGE", stderr)
	c.rules.register(f)
	if err := f.parse(args, 1); err != nil {
		return c, err
	}
	c.image = f.fs.Arg(0)
	return c, nil
}

// resolve prints the candidates a pull of image would try, in order, one per
// line: the reference first, then why.
func resolve(c resolveConfig, stdout io.Writer) error {
	r, err := resolver.New(c.rules.file, c.rules.dir)
	if err != nil {
		return err
	}
	res, err := r.Resolve(c.image)
	if err != nil {
		return err
	}
	for _, cand := range res.Candidates {
		fmt.Fprintln(stdout, cand.String())
	}
	return nil
}

// checkConfig validates the rules and prints the effective ones.
func checkConfig(c rulesConfig, stdout io.Writer) error {
	r, err := resolver.New(c.file, c.dir)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, r.Describe())
	return nil
}
