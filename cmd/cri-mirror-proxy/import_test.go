package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// The examples shipped for operators; the tests below import them.
var (
	exampleIDMS = filepath.Join("..", "..", "deploy", "openshift", "imagedigestmirrorset.yaml")
	exampleITMS = filepath.Join("..", "..", "deploy", "openshift", "imagetagmirrorset.yaml")
)

const sha = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseImport(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		want   importConfig
		code   int  // exit code of the error, 0 for none
		help   bool // flag.ErrHelp
		stdout string
		stderr string
	}{
		{args: []string{"a.yaml"}, want: importConfig{files: []string{"a.yaml"}}},
		{args: []string{"--output", "/etc/containers/registries.conf.d/50-x.conf", "a.yaml", "-"},
			want: importConfig{files: []string{"a.yaml", "-"}, output: "/etc/containers/registries.conf.d/50-x.conf"}},
		{args: []string{"-output=x.conf", "--", "-odd-name.yaml"}, want: importConfig{files: []string{"-odd-name.yaml"}, output: "x.conf"}},
		{args: nil, code: 2, stderr: "Usage: cri-mirror-proxy import [flags] FILE..."},
		{args: []string{"--output", "x.conf"}, code: 2, stderr: "--output"},
		{args: []string{"--bogus", "a.yaml"}, code: 2, stderr: "Usage: cri-mirror-proxy import"},
		{args: []string{"--help"}, help: true, stdout: "ImageContentSourcePolicy"},
		{args: []string{"a.yaml", "--output", "x.conf", "b.yaml"}, want: importConfig{files: []string{"a.yaml", "b.yaml"}, output: "x.conf"}},
	} {
		var stdout, stderr bytes.Buffer
		got, err := parseImport(tc.args, &stdout, &stderr)
		var ee *exitError
		switch {
		case tc.help:
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("parseImport(%q) = %v, want flag.ErrHelp", tc.args, err)
			}
		case tc.code != 0:
			if !errors.As(err, &ee) || ee.code != tc.code {
				t.Errorf("parseImport(%q) = %v, want exit code %d", tc.args, err, tc.code)
			}
		case err != nil:
			t.Errorf("parseImport(%q): %v", tc.args, err)
		default:
			if !slices.Equal(got.files, tc.want.files) || got.output != tc.want.output {
				t.Errorf("parseImport(%q) = files %q output %q, want %q %q", tc.args, got.files, got.output, tc.want.files, tc.want.output)
			}
			if got.stdin == nil || got.stderr != &stderr {
				t.Errorf("parseImport(%q) did not set stdin and stderr", tc.args)
			}
		}
		if !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("parseImport(%q) stderr %q lacks %q", tc.args, stderr.String(), tc.stderr)
		}
		if !strings.Contains(stdout.String(), tc.stdout) || (tc.stdout == "" && stdout.Len() > 0) {
			t.Errorf("parseImport(%q) stdout %q, want it to hold %q", tc.args, stdout.String(), tc.stdout)
		}
	}
}

func TestParseImportEnv(t *testing.T) {
	t.Setenv("CRI_MIRROR_PROXY_OUTPUT", "/tmp/from-env.conf")
	c, err := parseImport([]string{"a.yaml"}, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil || c.output != "/tmp/from-env.conf" {
		t.Errorf("parseImport with env = %+v, %v", c, err)
	}
}

// importExamples runs the import of the shipped examples to stdout.
func importExamples(t *testing.T) (out, notes string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := runImport(importConfig{files: []string{exampleIDMS, exampleITMS}, stderr: &stderr}, &stdout)
	if err != nil {
		t.Fatalf("import of the examples: %v", err)
	}
	return stdout.String(), stderr.String()
}

// resolveWith loads a generated drop-in as the proxy would and resolves image.
func resolveWith(t *testing.T, dropIn, image string) ([]string, error) {
	t.Helper()
	dir := t.TempDir()
	main := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(main, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	confD := filepath.Join(dir, "registries.conf.d")
	if err := os.Mkdir(confD, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confD, "50-openshift-mirrors.conf"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := resolver.New(main, confD)
	if err != nil {
		t.Fatalf("the proxy refuses the generated drop-in: %v\n%s", err, dropIn)
	}
	res, err := r.Resolve(image)
	if err != nil {
		return nil, err
	}
	var got []string
	for _, c := range res.Candidates {
		got = append(got, c.Ref.String()+" "+c.Policy)
	}
	return got, nil
}

func TestRunImportExamples(t *testing.T) {
	out, notes := importExamples(t)
	for _, want := range []string{
		"#   ImageDigestMirrorSet/mirror-digests (" + exampleIDMS + ":13)",
		"#   ImageTagMirrorSet/mirror-tags (" + exampleITMS + ":3)",
		`prefix = "registry.k8s.io"`,
		`pull-from-mirror = "tag-only"`,
		`pull-from-mirror = "digest-only"`,
		"blocked = true",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The release repositories have digest mirrors only under
	// NeverContactSource: import says tag pulls of them are refused.
	if !strings.Contains(notes, "note: quay.io/openshift-release-dev/ocp-release: NeverContactSource with digest mirrors only") {
		t.Errorf("notes on stderr: %q", notes)
	}

	for _, tc := range []struct {
		image   string
		want    []string
		blocked bool
	}{
		// ITMS NeverContactSource: tags from the two mirrors, never the source.
		{image: "registry.k8s.io/pause:3.10", want: []string{
			"mirror.example.internal:5000/k8s/pause:3.10 tag-only",
			"harbor.example.internal/k8s-cache/pause:3.10 tag-only",
		}},
		// IDMS digest mirror for the same source; the shared [[registry]]
		// is blocked, so no source either.
		{image: "registry.k8s.io/pause" + sha, want: []string{"mirror.example.internal:5000/k8s/pause" + sha + " digest-only"}},
		{image: "quay.io/openshift-release-dev/ocp-release" + sha, want: []string{"mirror.example.internal:5000/ocp/release" + sha + " digest-only"}},
		{image: "quay.io/openshift-release-dev/ocp-v4.0-art-dev" + sha, want: []string{"mirror.example.internal:5000/ocp/release" + sha + " digest-only"}},
		{image: "quay.io/openshift-release-dev/ocp-release:4.16.0-x86_64", blocked: true},
		// Tag mirror with the source as fallback.
		{image: "busybox:1.36", want: []string{
			"harbor.example.internal/dockerhub-cache/library/busybox:1.36 tag-only",
			"docker.io/library/busybox:1.36 source",
		}},
		{image: "busybox" + sha, want: []string{"docker.io/library/busybox" + sha + " source"}},
		{image: "k8s.gcr.io/pause:3.9", want: []string{
			"harbor.example.internal/gcr-cache/pause:3.9 tag-only",
			"k8s.gcr.io/pause:3.9 source",
		}},
	} {
		got, err := resolveWith(t, out, tc.image)
		if tc.blocked {
			var be *resolver.BlockedError
			if !errors.As(err, &be) {
				t.Errorf("%s: got %q, %v; want it refused", tc.image, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %q, %v\nwant %q", tc.image, got, err, tc.want)
		}
	}
}

func TestRunImportOutputFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "50-openshift-mirrors.conf")
	if err := os.WriteFile(out, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	c := importConfig{files: []string{exampleITMS, exampleIDMS}, output: out, stderr: &stderr}
	if err := runImport(c, &stdout); err != nil {
		t.Fatal(err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout with --output: %q", stdout.String())
	}
	first, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(first, []byte(`prefix = "registry.k8s.io"`)) {
		t.Errorf("output file:\n%s", first)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left in the output directory: %v", entries)
	}
	// The drop-in in place is what check-config accepts.
	empty := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := resolver.Check(empty, dir); err != nil {
		t.Errorf("check-config of the written directory: %v", err)
	}

	// Same input, same bytes: re-running an import changes nothing.
	if err := runImport(c, &stdout); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(out)
	if !bytes.Equal(first, second) {
		t.Errorf("a second import differs:\n%s\n---\n%s", first, second)
	}

	// A name a drop-in directory would not read gets a note.
	stderr.Reset()
	c.output = filepath.Join(dir, "mirrors.toml")
	if err := runImport(c, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "does not end in .conf") {
		t.Errorf("stderr: %q", stderr.String())
	}

	// A directory that does not exist is an error, and nothing is written.
	c.output = filepath.Join(dir, "missing", "x.conf")
	if err := runImport(c, &stdout); err == nil {
		t.Error("import into a missing directory succeeded")
	}
}

func TestRunImportStdin(t *testing.T) {
	data, err := os.ReadFile(exampleITMS)
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	c := importConfig{files: []string{"-"}, stdin: bytes.NewReader(data)}
	if err := runImport(c, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "#   ImageTagMirrorSet/mirror-tags (<stdin>:3)") {
		t.Errorf("output:\n%s", stdout.String())
	}
	c = importConfig{files: []string{"-", "-"}, stdin: bytes.NewReader(data)}
	if err := runImport(c, &stdout); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("stdin twice: %v", err)
	}
}

func TestRunImportErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", `apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata:
  name: bad
spec:
  imageTagMirrors:
  - source: quay.io/app:1.0
    mirrors: [mirror.example.com/app]
`)
	alsoBad := write("also-bad.yaml", `apiVersion: config.openshift.io/v1
kind: ImageDigestMirrorSet
metadata:
  name: also-bad
spec:
  imageDigestMirrors:
  - source: quay.io/app
    mirrors: ["https://mirror.example.com/app"]
`)
	configMap := write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
	out := filepath.Join(dir, "out.conf")

	for _, tc := range []struct {
		name  string
		files []string
		want  []string
	}{
		{"invalid objects in several files are all reported", []string{bad, exampleITMS, alsoBad}, []string{
			bad + ":7: ImageTagMirrorSet/bad: spec.imageTagMirrors[0].source:",
			alsoBad + ":8: ImageDigestMirrorSet/also-bad: spec.imageDigestMirrors[0].mirrors[0]:",
		}},
		{"missing file", []string{filepath.Join(dir, "nope.yaml")}, []string{"nope.yaml", "no such file"}},
		{"no mirror sets", []string{configMap}, []string{"no ImageTagMirrorSet, ImageDigestMirrorSet or ImageContentSourcePolicy objects found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			err := runImport(importConfig{files: tc.files, output: out}, &stdout)
			if err == nil {
				t.Fatal("import succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed import wrote %s", out)
			}
		})
	}
}

// TestImportCommand runs import through run, as main does.
func TestImportCommand(t *testing.T) {
	out, errOut, code := runCLI("import", exampleITMS)
	if code != 0 || !strings.Contains(out, `prefix = "registry.k8s.io"`) {
		t.Errorf("import: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if _, errOut, code := runCLI("import"); code != 2 || !strings.Contains(errOut, "want at least 1 FILE") {
		t.Errorf("import without FILE: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := runCLI("import", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("import of a missing file: exit %d, stderr %q", code, errOut)
	}
}
