package resolver

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/BurntSushi/toml"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
)

const dockerMirrorConf = `
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror-a.local/hub"
`

// firstRef resolves image and returns the first candidate's reference.
func firstRef(t *testing.T, r *Resolver, image string) string {
	t.Helper()
	res, err := r.Resolve(image)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", image, err)
	}
	return res.Candidates[0].Ref.String()
}

func TestDropIns(t *testing.T) {
	r := newTestResolver(t, dockerMirrorConf, map[string]string{
		// overrides the main file's docker.io rule as a whole
		"10-hub.conf": `
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror-b.local/hub"
pull-from-mirror = "tag-only"
`,
		// adds a rule
		"20-quay.conf": `
[[registry]]
location = "quay.io"
blocked = true
`,
		// a later file wins over an earlier one
		"30-hub.conf": `
[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror-c.local/hub"
`,
		"README":            `not toml at all [`,
		"30-hub.conf.bak":   `not toml at all [`,
		"40-only-keys.conf": `unqualified-search-registries = ["docker.io"]`,
	})
	if got, want := firstRef(t, r, "nginx"), "mirror-c.local/hub/library/nginx:latest"; got != want {
		t.Errorf("docker.io: got %s, want %s", got, want)
	}
	_, err := r.Resolve("quay.io/a/b:1")
	var be *BlockedError
	if !errors.As(err, &be) || filepath.Base(be.File) != "20-quay.conf" {
		t.Errorf("quay.io: got %v, want a BlockedError naming 20-quay.conf", err)
	}
	desc := r.Describe()
	for _, want := range []string{"10-hub.conf", "20-quay.conf", "30-hub.conf", "40-only-keys.conf", "mirror-c.local/hub", `prefix "quay.io"`} {
		if !strings.Contains(desc, want) {
			t.Errorf("Describe() lacks %q:\n%s", want, desc)
		}
	}
	if strings.Contains(desc, "README") || strings.Contains(desc, ".bak") || strings.Contains(desc, "mirror-b.local") {
		t.Errorf("Describe() shows ignored files or overridden rules:\n%s", desc)
	}
}

func TestDropInSubdirectoryIgnored(t *testing.T) {
	confPath, confDir := confFiles(t, dockerMirrorConf, nil)
	if err := os.Mkdir(filepath.Join(confDir, "sub.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := New(confPath, confDir); err != nil {
		t.Fatal(err)
	}
}

func TestMissingFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.conf")

	// An explicit main file must exist, as in containers/image.
	_, err := New(missing, filepath.Join(dir, "d"))
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("New(missing) = %v, want an error naming %s", err, missing)
	}
	// The defaulted main file may be missing: drop-ins alone apply.
	confDir := filepath.Join(dir, "d")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(confDir, "hub.conf"), dockerMirrorConf)
	rs, err := load(missing, confDir, true)
	if err != nil {
		t.Fatalf("load(optional missing main): %v", err)
	}
	if len(rs.registries) != 1 || !rs.mainMissing {
		t.Errorf("got %d rules, mainMissing=%v; want the drop-in's rule only", len(rs.registries), rs.mainMissing)
	}
	if !strings.Contains(rs.describe(), "missing") {
		t.Errorf("describe() does not say the main file is missing:\n%s", rs.describe())
	}
	// A missing drop-in directory is no error.
	confPath, _ := confFiles(t, dockerMirrorConf, nil)
	if _, err := New(confPath, filepath.Join(dir, "no-such-dir")); err != nil {
		t.Errorf("missing drop-in dir: %v", err)
	}
}

func TestKnownTopLevelKeysAccepted(t *testing.T) {
	newTestResolver(t, `
unqualified-search-registries = ["docker.io", "quay.io"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json"]
additional-layer-store-auth-helper = "/usr/bin/helper"

[aliases]
"nginx" = "docker.io/library/nginx"
"fedora" = "registry.fedoraproject.org/fedora"

[[registry]]
prefix = "docker.io"
location = "docker.io"
insecure = false
blocked = false
mirror-by-digest-only = false
[[registry.mirror]]
location = "mirror.local"
insecure = true
pull-from-mirror = "all"
`, nil)
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name    string
		main    string
		dropIn  string // written as 50-bad.conf when set; the error must name it
		want    []string
		isParse bool
	}{
		{
			name: "unknown mirror key",
			main: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.local\"\npull_from_mirror = \"tag-only\"\n",
			want: []string{`unknown key "registry.mirror.pull_from_mirror"`},
		},
		{
			name:   "unknown key in a drop-in",
			dropIn: "[[registry]]\nlocation = \"docker.io\"\nblock = true\n",
			want:   []string{`unknown key "registry.block"`},
		},
		{
			name: "several unknown keys",
			main: "mirrors = 1\n[other]\nx = 1\n",
			want: []string{`unknown keys "mirrors", "other.x"`},
		},
		{
			name: "v1 format",
			main: "[registries.search]\nregistries = [\"docker.io\"]\n",
			want: []string{"v1 format", "registries.search.registries"},
		},
		{
			name:    "TOML syntax error",
			main:    "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]\n",
			want:    []string{":3: invalid TOML"},
			isParse: true,
		},
		{
			name:    "TOML syntax error in a drop-in",
			dropIn:  "\n\n\n\nlocation = = 1\n",
			want:    []string{":5: invalid TOML"},
			isParse: true,
		},
		{
			name: "wrong value type",
			main: "[[registry]]\nlocation = \"docker.io\"\nblocked = \"yes\"\n",
			want: []string{"line 3", "registry.blocked"},
		},
		{
			name: "pull-from-mirror on the registry (containers/image check)",
			main: "[[registry]]\nlocation = \"docker.io\"\npull-from-mirror = \"tag-only\"\n",
			want: []string{"pull-from-mirror must not be set"},
		},
		{
			name: "bad pull-from-mirror value (containers/image check)",
			main: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.local\"\npull-from-mirror = \"tags\"\n",
			want: []string{`unsupported pull-from-mirror value "tags"`},
		},
		{
			name: "URI scheme (containers/image check)",
			main: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"https://m.local\"\n",
			want: []string{"URI schemes are not supported"},
		},
		{
			name: "empty mirror location (containers/image check)",
			main: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\ninsecure = true\n",
			want: []string{"mirror location is unset"},
		},
		{
			name: "conflicting insecure (containers/image check)",
			main: "[[registry]]\nprefix = \"a.io/x\"\nlocation = \"a.io\"\n[[registry]]\nprefix = \"a.io/y\"\nlocation = \"a.io\"\ninsecure = true\n",
			want: []string{"conflicting 'insecure'"},
		},
		{
			name: "wildcard with a path (containers/image check)",
			main: "[[registry]]\nprefix = \"*.example.com/foo\"\nlocation = \"m.local\"\n",
			want: []string{"Wildcarded prefix"},
		},
		{
			name: "mirror-by-digest-only with pull-from-mirror (containers/image check)",
			main: "[[registry]]\nlocation = \"docker.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.local\"\npull-from-mirror = \"all\"\n",
			want: []string{"mirror-by-digest-only"},
		},
		{
			name: "mirror location without a host",
			main: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"mirror\"\n",
			want: []string{`registry[0] (location "docker.io"): mirror[0].location "mirror"`, "Docker Hub namespace"},
		},
		{
			name:   "mirror location with an uppercase path",
			dropIn: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"m.local/Hub\"\n",
			want:   []string{`mirror[0].location "m.local/Hub"`, "uppercase"},
		},
		{
			name: "location with a bad host",
			main: "[[registry]]\nprefix = \"docker.io\"\nlocation = \"bad_host.io\"\n",
			want: []string{`registry[0] (prefix "docker.io"): location "bad_host.io"`},
		},
		{
			name: "short-name prefix never matches",
			main: "[[registry]]\nprefix = \"nginx\"\nlocation = \"m.local/nginx\"\n",
			want: []string{`prefix "nginx"`, "Docker Hub namespace"},
		},
		{
			name: "namespace-proxy",
			main: "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"proxy.local\"\nnamespace-proxy = \"docker.io\"\n",
			want: []string{"mirror[0].namespace-proxy is not supported"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dropIns map[string]string
			if tt.dropIn != "" {
				dropIns = map[string]string{"50-bad.conf": tt.dropIn}
			}
			confPath, confDir := confFiles(t, tt.main, dropIns)
			_, err := New(confPath, confDir)
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			if err2 := Check(confPath, confDir); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("Check = %v, want the same error as New", err2)
			}
			file := confPath
			if tt.dropIn != "" {
				file = filepath.Join(confDir, "50-bad.conf")
			}
			msg := err.Error()
			t.Log(msg)
			for _, want := range append([]string{file}, tt.want...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
			if errors.As(err, &toml.ParseError{}) != tt.isParse {
				t.Errorf("errors.As(toml.ParseError) = %v, want %v", !tt.isParse, tt.isParse)
			}
		})
	}
}

func TestReload(t *testing.T) {
	confPath, confDir := confFiles(t, dockerMirrorConf, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	const (
		before = "mirror-a.local/hub/library/nginx:latest"
		after  = "mirror-z.local/hub/library/nginx:latest"
	)
	if got := firstRef(t, r, "nginx"); got != before {
		t.Fatalf("got %s, want %s", got, before)
	}

	// success: the new rules serve
	writeFile(t, confPath, strings.Replace(dockerMirrorConf, "mirror-a", "mirror-z", 1))
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := firstRef(t, r, "nginx"); got != after {
		t.Fatalf("after reload got %s, want %s", got, after)
	}

	// failures: the old rules keep serving, the error names the file
	for name, bad := range map[string]string{
		"syntax":      "[[registry]\n",
		"unknown key": dockerMirrorConf + "blocked_ = true\n",
		"library":     "[[registry]]\nlocation = \"docker.io\"\npull-from-mirror = \"all\"\n",
		"location":    strings.Replace(dockerMirrorConf, "mirror-a.local", "MIRROR", 1),
	} {
		writeFile(t, confPath, bad)
		err := r.Reload()
		if err == nil || !strings.Contains(err.Error(), confPath) {
			t.Errorf("%s: Reload = %v, want an error naming %s", name, err, confPath)
		}
		// even if someone empties containers/image's process-wide cache
		sysregistriesv2.InvalidateCache()
		if got := firstRef(t, r, "nginx"); got != after {
			t.Errorf("%s: after failed reload got %s, want the old %s", name, got, after)
		}
	}

	// a bad drop-in fails the reload as well
	writeFile(t, confPath, dockerMirrorConf)
	writeFile(t, filepath.Join(confDir, "bad.conf"), "x = 1\n")
	if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "bad.conf") {
		t.Errorf("Reload with bad drop-in = %v, want an error naming bad.conf", err)
	}
	if got := firstRef(t, r, "nginx"); got != after {
		t.Errorf("got %s, want the old %s", got, after)
	}
	if err := os.Remove(filepath.Join(confDir, "bad.conf")); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := firstRef(t, r, "nginx"); got != before {
		t.Errorf("got %s, want %s", got, before)
	}
}

func TestResolveDoesNoIO(t *testing.T) {
	confPath, confDir := confFiles(t, dockerMirrorConf, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(confPath)); err != nil {
		t.Fatal(err)
	}
	sysregistriesv2.InvalidateCache()
	if got := firstRef(t, r, "nginx"); got != "mirror-a.local/hub/library/nginx:latest" {
		t.Errorf("got %s", got)
	}
}

func TestConcurrentResolveAndReload(t *testing.T) {
	confPath, confDir := confFiles(t, dockerMirrorConf, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	allowed := []string{"mirror-a.local/hub/library/nginx:latest", "mirror-z.local/hub/library/nginx:latest"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				res, err := r.Resolve("nginx")
				if err != nil {
					t.Error(err)
					return
				}
				if got := res.Candidates[0].Ref.String(); !slices.Contains(allowed, got) {
					t.Errorf("got %s", got)
					return
				}
			}
		})
	}
	for i := range 20 {
		conf := dockerMirrorConf
		if i%2 == 1 {
			conf = strings.Replace(conf, "mirror-a", "mirror-z", 1)
		}
		writeFile(t, confPath, conf)
		if err := r.Reload(); err != nil {
			t.Error(err)
		}
		_ = r.Describe()
	}
	wg.Wait()
}

func TestDescribe(t *testing.T) {
	confPath, confDir := confFiles(t, rulesConf, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	desc := r.Describe()
	t.Log("\n" + desc)
	for _, want := range []string{
		"registries.conf: " + confPath,
		"drop-in directory: " + confDir + " (0 file(s))",
		"prefix \"docker.io\" (from " + confPath + ")",
		"1. 127.0.0.1:5000/all pull-from-mirror=all\n",
		"2. 127.0.0.1:5001/tags pull-from-mirror=tag-only insecure\n",
		"3. 127.0.0.1:5002/digests pull-from-mirror=digest-only\n",
		"blocked: true (never contact source: only mirrors are tried)",
		"blocked: true (every pull is refused)",
		"mirror-by-digest-only: true",
		"location: (none: the image's own host)",
		"location: registry.corp:8443/team-mirror",
		"insecure: true",
	} {
		if !strings.Contains(desc, want) {
			t.Errorf("Describe() lacks %q", want)
		}
	}
	// stable: prefixes in sorted order, same text every time
	if desc != r.Describe() {
		t.Error("Describe() is not stable")
	}
	var prefixes []string
	for line := range strings.Lines(desc) {
		if p, ok := strings.CutPrefix(line, "prefix "); ok {
			prefixes = append(prefixes, p)
		}
	}
	if !slices.IsSorted(prefixes) || len(prefixes) != 12 {
		t.Errorf("prefixes not sorted or missing: %q", prefixes)
	}

	empty := newTestResolver(t, "", nil).Describe()
	if !strings.Contains(empty, "no [[registry]] rules") {
		t.Errorf("empty Describe() = %q", empty)
	}
	tagPrefix := newTestResolver(t, "[[registry]]\nprefix = \"docker.io/library/nginx:1.27\"\nlocation = \"m.local/nginx:stable\"\n", nil).Describe()
	if !strings.Contains(tagPrefix, "never matches a pull") {
		t.Errorf("tag prefix not flagged:\n%s", tagPrefix)
	}
}

func TestDuplicatePrefixInOneFile(t *testing.T) {
	confPath, confDir := confFiles(t, `
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry]]
location = "docker.io/"
[[registry.mirror]]
location = "mirror.local/hub"
`, nil)
	_, err := New(confPath, confDir)
	if err == nil || !strings.Contains(err.Error(), confPath) || !strings.Contains(err.Error(), `prefix "docker.io" is already defined by registry[0]`) {
		t.Errorf("New = %v, want an error naming the file and the duplicate prefix", err)
	}
}
