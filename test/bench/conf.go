package main

import (
	"fmt"
	"io"
	"strings"
)

// Names used by every phase. Sources live under docker.io, which
// test/lib.sh points at a closed loopback port in containerd's certs.d: a
// pull that ever fell back to the source would fail at once instead of
// leaving the machine.
const (
	benchPrefix = "docker.io/bench" // images pulled through the proxy
	mirrorPath  = "mirror"          // where the good mirror keeps them
	emptyPath   = "empty"           // a mirror path holding nothing
)

// fallbackCase is one first-mirror fault of phase 4.
type fallbackCase struct {
	name string
	what string
}

var fallbackCases = []fallbackCase{
	{"baseline", "only the good mirror"},
	{"refused", "first mirror refuses connections (closed port)"},
	{"blackhole", "first mirror accepts and never answers"},
	{"missing", "first mirror lacks the tag"},
}

// fallbackRule is one case in one repetition. Each has a registries.conf
// rule and a faulty mirror location of its own, so every repetition starts
// with a closed breaker and no two share one.
type fallbackRule struct {
	c   fallbackCase
	rep int
}

func fallbackRules(reps int) []fallbackRule {
	var out []fallbackRule
	for rep := range reps {
		for _, c := range fallbackCases {
			out = append(out, fallbackRule{c: c, rep: rep})
		}
	}
	return out
}

func (r fallbackRule) repo() string   { return fmt.Sprintf("fb-%s-%d", r.c.name, r.rep) }
func (r fallbackRule) prefix() string { return "docker.io/" + r.repo() }

// firstMirror is the faulty mirror listed before the good one ("" for the
// baseline).
func (r fallbackRule) firstMirror(cfg *config) string {
	repo := r.repo()
	switch r.c.name {
	case "refused":
		return fmt.Sprintf("127.0.0.1:%d/%s/%s", cfg.closedPort, mirrorPath, repo)
	case "blackhole":
		return fmt.Sprintf("127.0.0.1:%d/%s/%s", cfg.blackholePort, mirrorPath, repo)
	case "missing":
		return cfg.registry + "/" + emptyPath + "/" + repo
	}
	return ""
}

// tagCheckSource is the source of the tag check case: a repository path of
// the local registry itself, so that the proxy's HEAD to the source stays on
// loopback and answers (the healthy path). Its rule's mirror is the good
// mirror's copy, the same image.
func (cfg *config) tagCheckSource() string { return cfg.registry + "/tagsrc" }

// tagCheckRef is the image of the tag check case, and tagCheckMirrorRef
// where the good mirror holds it.
func (cfg *config) tagCheckRef() string { return cfg.tagCheckSource() + "/pull:1" }
func (cfg *config) tagCheckMirrorRef() string {
	return cfg.registry + "/" + mirrorPath + "/tagsrc/pull:1"
}

// mirrorRef is where the good mirror holds an image of the given source
// name: docker.io/bench/x:1 → 127.0.0.1:PORT/mirror/bench/x:1.
func (cfg *config) mirrorRef(source string) string {
	return cfg.registry + "/" + mirrorPath + "/" + strings.TrimPrefix(source, "docker.io/")
}

// writeConf writes the registries.conf the proxy runs with.
func writeConf(w io.Writer, cfg *config) error {
	var b strings.Builder
	b.WriteString("# Written by test/bench (-print-conf): the benchmark's mirror rules.\n")
	rule := func(prefix string, mirrors ...string) {
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\n", prefix, prefix)
		for _, m := range mirrors {
			fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %q\ninsecure = true\npull-from-mirror = \"tag-only\"\n", m)
		}
	}
	rule(benchPrefix, cfg.mirrorRef(benchPrefix))
	// The tag check case: the source is the registry (plain HTTP) itself.
	fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n", cfg.tagCheckSource(), cfg.tagCheckSource())
	fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %q\ninsecure = true\npull-from-mirror = \"tag-only\"\n", cfg.registry+"/"+mirrorPath+"/tagsrc")
	for _, r := range fallbackRules(cfg.fallbackReps) {
		good := cfg.mirrorRef(r.prefix())
		if bad := r.firstMirror(cfg); bad != "" {
			rule(r.prefix(), bad, good)
		} else {
			rule(r.prefix(), good)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
