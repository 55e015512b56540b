package resolver

import (
	"strings"
	"testing"
)

func TestTagCheckPolicy(t *testing.T) {
	p, err := ParseTagCheckPolicy("docker.io=source-if-reachable, registry.corp=source-required,registry.corp/dev=off,*.example.com=source-required")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, prefix string
		mode         TagCheck
	}{
		{"docker.io/library/nginx", "docker.io", TagCheckSourceIfReachable},
		{"registry.corp/prod/app", "registry.corp", TagCheckSourceRequired},
		{"registry.corp:5000/prod/app", "registry.corp", TagCheckSourceRequired}, // a host-only prefix: any port
		{"registry.corp/dev/app", "registry.corp/dev", TagCheckOff},              // the longest prefix wins
		{"registry.corporate/app", "", TagCheckOff},
		{"a.example.com/app", "*.example.com", TagCheckSourceRequired},
		{"quay.io/app", "", TagCheckOff},
	} {
		e, ok := p.For(tc.name)
		if e.Mode != tc.mode || e.Prefix != tc.prefix || ok != (tc.prefix != "") {
			t.Errorf("For(%s) = %+v, %v; want prefix %q mode %s", tc.name, e, ok, tc.prefix, tc.mode)
		}
	}
	if got, want := p.String(), "*.example.com=source-required,docker.io=source-if-reachable,registry.corp=source-required,registry.corp/dev=off"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !p.Overlaps("registry.corp/prod") || !p.Overlaps("docker.io") || p.Overlaps("quay.io") {
		t.Errorf("Overlaps: registry.corp/prod %v, docker.io %v, quay.io %v; want true, true, false",
			p.Overlaps("registry.corp/prod"), p.Overlaps("docker.io"), p.Overlaps("quay.io"))
	}
	var none *TagCheckPolicy
	if e, ok := none.For("docker.io/x"); ok || e.Mode != TagCheckOff {
		t.Errorf("nil policy: %+v %v", e, ok)
	}
}

func TestTagCheckPolicyErrors(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io=strict":          `prefix "docker.io": "strict" is not off`,
		"docker.io":                 "want prefix=mode",
		"=off":                      "empty prefix",
		"https://docker.io=off":     "without a scheme",
		"docker.*=off":              "wildcard",
		"a.io=off,a.io=off":         "twice",
		"docker.io/x@sha256:a=off":  "not a repository name prefix",
		"docker.io=source-required": "",
	} {
		_, err := ParseTagCheckPolicy(in)
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("ParseTagCheckPolicy(%q) = %v, want an error with %q", in, err, want)
		}
	}
}
