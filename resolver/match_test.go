package resolver

import (
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
// FindRegistry on the same files: the same rule everywhere, including a
// host-only prefix followed by a port.
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
	}{
		{"example.com/x", "example.com"},
		{"example.com/foo", "example.com/foo"},
		{"example.com/foo/x", "example.com/foo"},
		{"example.com/foobar", "example.com"},
		{"example.com/foo/bar/baz", "example.com/foo/bar"},
		{"example.com:5000/x", "example.com:5000"},
		{"example.com:5001/x", "example.com"},
		{"x.example.com/y", "*.example.com"},
		{"x.y.example.com/z", "*.example.com"},
		{"x.sub.example.com/z", "*.sub.example.com"},
		// Equal length: the first in prefix order wins, and "*" sorts
		// before letters, so "*.example.com" shadows "a.example.com".
		{"a.example.com/z", "*.example.com"},
		{"b.example.com/z", "*.example.com"},
		{"c.b.example.com/z", "*.b.example.com"},
		{"xb.example.com/z", "xb.example.com"},
		{"x.example.com:5000/y", "*.example.com"},
		{"x.example.com.evil.io/y", ""},
		// the library looks at the first ".example.com" only
		{"x.example.com.example.com/y", ""},
		{"evil.io/x.example.com/y", ""},
		{"example.community/x", ""},
		{"localhost/x", "localhost"},
		{"localhost:5000/x", "localhost"},
		{"docker.io/library/nginx", "docker.io/library"},
		{"docker.io/libraryx/nginx", ""},
		{"quay.io/a/b", ""},
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
		if libGot != got {
			t.Errorf("%q: library FindRegistry = %q, ours = %q", tt.name, libGot, got)
		}
	}
}
