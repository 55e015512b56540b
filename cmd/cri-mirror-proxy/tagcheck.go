package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// tagCheckKey is the flag, and the config file's table, of the tag-check
// policy. In the config file it is a table keyed by prefix:
//
//	[tag-check]
//	"docker.io" = "source-if-reachable"
//	"registry.corp/prod" = "source-required"
//
// on the command line and in the environment the same as
// "docker.io=source-if-reachable,registry.corp/prod=source-required".
const tagCheckKey = "tag-check"

// flattenTagCheck turns the [tag-check] table into the flag's form. A
// value that is not a string is an error naming its key.
func flattenTagCheck(table map[string]any) (string, error) {
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v, ok := table[k].(string)
		if !ok {
			return "", fmt.Errorf("%q: want one of off, source-if-reachable, source-required, got %T", k, table[k])
		}
		if strings.ContainsAny(k, ",=") {
			return "", fmt.Errorf("%q: a prefix has no \",\" or \"=\"", k)
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ","), nil
}

// tagCheckValue is the --tag-check flag: a parsed policy.
type tagCheckValue struct{ p **resolver.TagCheckPolicy }

func (v tagCheckValue) String() string {
	if v.p == nil || *v.p == nil {
		return ""
	}
	return (*v.p).String()
}

func (v tagCheckValue) Set(s string) error {
	p, err := resolver.ParseTagCheckPolicy(s)
	if err != nil {
		return err
	}
	*v.p = p
	return nil
}

// TagCheck declares the tag-check policy flag.
func (f *flags) TagCheck(p **resolver.TagCheckPolicy, usage string) {
	*p = preset(f, tagCheckKey, &resolver.TagCheckPolicy{}, resolver.ParseTagCheckPolicy)
	f.fs.Var(tagCheckValue{p}, tagCheckKey, f.help(tagCheckKey, usage))
}

// printTagCheck writes the effective tag-check policy and, per rule with
// mirrors, the mode its pulls of a tag get.
func printTagCheck(w io.Writer, p *resolver.TagCheckPolicy, cfg resolver.Config) {
	entries := p.Entries()
	if len(entries) == 0 {
		fmt.Fprintln(w, "tag check: off for every image (no [tag-check] entries)")
		return
	}
	fmt.Fprintln(w, "tag check (the longest matching prefix wins; a tag no prefix matches: off):")
	for _, e := range entries {
		fmt.Fprintf(w, "  %-40s %s\n", e.Prefix, e.Mode)
	}
	for _, r := range cfg.Rules {
		if len(r.Mirrors) == 0 {
			continue
		}
		e, _ := p.For(r.Prefix)
		fmt.Fprintf(w, "  rule %q: tags under it are checked %s", r.Prefix, e.Mode)
		if r.NeverContactSource && e.Mode != resolver.TagCheckOff {
			fmt.Fprint(w, " (the rule never contacts the source: the check cannot be made")
			if e.Mode == resolver.TagCheckSourceRequired {
				fmt.Fprint(w, ", so every pull of a tag fails")
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
	}
}
