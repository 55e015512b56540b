package resolver

import (
	"strings"
	"testing"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

const matchConf = `
[[registry]]
location = "example.com"
[[registry]]
location = "example.com:5000"
[[registry]]
location = "example.com/foo"
[[registry]]
location = "example.com/foo/bar"
[[registry]]
prefix = "*.example.com"
[[registry]]
prefix = "*.sub.example.com"
[[registry]]
location = "a.example.com"
[[registry]]
prefix = "*.b.example.com"
[[registry]]
location = "xb.example.com"
[[registry]]
location = "localhost"
[[registry]]
location = "docker.io/library"
[[registry]]
prefix = "docker.io/library/nginx:1.27"
location = "m.local/nginx:stable"
`

// TestMatchAgreesWithFindRegistry checks our matcher against the library's
// FindRegistry on the same files: same rule everywhere, except where the
// library lets a host-only prefix run into a port (see match.go).
func TestMatchAgreesWithFindRegistry(t *testing.T) {
	confPath, confDir := confFiles(t, matchConf, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	rs := r.rules.Load()
	sys := &types.SystemContext{SystemRegistriesConfPath: confPath, SystemRegistriesConfDirPath: confDir}

	tests := []struct {
		name string
		want string // our rule prefix, "" for none
		port bool   // the library matches a host-only prefix followed by a port
	}{
		{"example.com/x", "example.com", false},
		{"example.com/foo", "example.com/foo", false},
		{"example.com/foo/x", "example.com/foo", false},
		{"example.com/foobar", "example.com", false},
		{"example.com/foo/bar/baz", "example.com/foo/bar", false},
		{"example.com:5000/x", "example.com:5000", false},
		{"example.com:5001/x", "", true},
		{"x.example.com/y", "*.example.com", false},
		{"x.y.example.com/z", "*.example.com", false},
		{"x.sub.example.com/z", "*.sub.example.com", false},
		// Equal length: the first in prefix order wins, and "*" sorts
		// before letters, so "*.example.com" shadows "a.example.com".
		{"a.example.com/z", "*.example.com", false},
		{"b.example.com/z", "*.example.com", false},
		{"c.b.example.com/z", "*.b.example.com", false},
		{"xb.example.com/z", "xb.example.com", false},
		{"x.example.com:5000/y", "", true},
		{"x.example.com.evil.io/y", "", false},
		// the library looks at the first ".example.com" only
		{"x.example.com.example.com/y", "", false},
		{"evil.io/x.example.com/y", "", false},
		{"example.community/x", "", false},
		{"localhost/x", "localhost", false},
		{"localhost:5000/x", "", true},
		{"docker.io/library/nginx", "docker.io/library", false},
		{"docker.io/libraryx/nginx", "", false},
		{"quay.io/a/b", "", false},
	}
	for _, tt := range tests {
		var got string
		if reg := rs.match(tt.name); reg != nil {
			got = reg.Prefix
		}
		if got != tt.want {
			t.Errorf("match(%q) = %q, want %q", tt.name, got, tt.want)
		}
		lib, err := sysregistriesv2.FindRegistry(sys, tt.name)
		if err != nil {
			t.Fatal(err)
		}
		var libGot string
		if lib != nil {
			libGot = lib.Prefix
		}
		switch {
		case !tt.port && libGot != got:
			t.Errorf("%q: library FindRegistry = %q, ours = %q", tt.name, libGot, got)
		case tt.port && (libGot == "" || strings.Contains(libGot, "/")):
			t.Errorf("%q: expected the library to match a host-only prefix across the port, got %q", tt.name, libGot)
		}
	}
}
