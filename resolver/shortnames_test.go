package resolver

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// refs lists the candidates' references, and the names they pull for.
func refs(res *Resolution) (got, images []string) {
	for _, c := range res.Candidates {
		got = append(got, c.Ref.String())
		images = append(images, c.Image.String())
	}
	return got, images
}

func TestResolveShortNames(t *testing.T) {
	const rules = `
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "mirror.local/quay"

[[registry]]
location = "blocked.example.com"
blocked = true
`
	d := testDigest
	for _, tc := range []struct {
		name, main, image, mode string
		dropIns                 map[string]string
		want, images            []string
		note                    string // substring of a note
		err                     string // substring of an ErrInvalidReference error
	}{
		{
			name: "files silent: docker.io, as before", main: rules, image: "nginx",
			want: []string{"docker.io/library/nginx:latest"}, images: []string{"docker.io/library/nginx:latest"},
			note: "no [aliases] entry and no unqualified-search-registries",
		},
		{
			name: "alias from a drop-in, through the rules", main: rules, image: "nginx:1.27",
			dropIns: map[string]string{"000-shortnames.conf": "[aliases]\n\"nginx\" = \"quay.io/lib/nginx\"\n"},
			want:    []string{"mirror.local/quay/lib/nginx:1.27", "quay.io/lib/nginx:1.27"}, images: []string{"quay.io/lib/nginx:1.27", "quay.io/lib/nginx:1.27"},
			note: `short name "nginx:1.27": Resolved "nginx" as an alias`,
		},
		{
			name:  "alias wins over search registries; a tag next to a digest is dropped",
			main:  "unqualified-search-registries = [\"registry.example.com\", \"docker.io\"]\n[aliases]\n\"team/app\" = \"quay.io/team/app\"\n" + rules,
			image: "team/app:1@" + d, want: []string{"mirror.local/quay/team/app@" + d, "quay.io/team/app@" + d},
			images: []string{"quay.io/team/app@" + d, "quay.io/team/app@" + d},
		},
		{
			name: "one search registry is not ambiguous", main: "unqualified-search-registries = [\"registry.example.com:5000\"]\n" + rules,
			image: "app:1", want: []string{"registry.example.com:5000/app:1"}, images: []string{"registry.example.com:5000/app:1"},
			note: "using unqualified-search registries",
		},
		{
			name: "several search registries, enforcing: refused as ambiguous", main: "unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n" + rules,
			image: "app", err: `short name mode is enforcing and the name is ambiguous: quay.io/app:latest, docker.io/library/app:latest`,
		},
		{
			name: "several search registries, disabled: each in turn, blocked ones skipped", mode: "disabled",
			main:  "unqualified-search-registries = [\"blocked.example.com\", \"quay.io\", \"docker.io\"]\n" + rules,
			image: "app", want: []string{"mirror.local/quay/app:latest", "quay.io/app:latest", "docker.io/library/app:latest"},
			images: []string{"quay.io/app:latest", "quay.io/app:latest", "docker.io/library/app:latest"},
			note:   `skipped: image "blocked.example.com/app:latest" is blocked`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			confPath, confDir := confFiles(t, tc.main, tc.dropIns)
			r, err := New(confPath, confDir, WithShortNameMode(tc.mode))
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Resolve(tc.image)
			if tc.err != "" {
				if !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Resolve(%s) = %v, %v; want ErrInvalidReference containing %q", tc.image, res, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%s): %v", tc.image, err)
			}
			got, images := refs(res)
			if !slices.Equal(got, tc.want) || !slices.Equal(images, tc.images) {
				t.Errorf("Resolve(%s) = %q for %q, want %q for %q", tc.image, got, images, tc.want, tc.images)
			}
			if tc.note != "" && !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, tc.note) }) {
				t.Errorf("notes %q lack %q", res.Notes, tc.note)
			}
			checkCandidates(t, res)
		})
	}
}

func TestShortNameModeOption(t *testing.T) {
	confPath, confDir := confFiles(t, "", nil)
	if _, err := New(confPath, confDir, WithShortNameMode("permissive")); err == nil || !strings.Contains(err.Error(), `"enforcing" or "disabled"`) {
		t.Errorf("New with short-name mode permissive = %v, want an error naming the values", err)
	}
	// The files' short-name-mode is not used, and check-config says so.
	confPath, confDir = confFiles(t, "short-name-mode = \"disabled\"\nunqualified-search-registries = [\"quay.io\", \"docker.io\"]\n", nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve("app"); !errors.Is(err, ErrInvalidReference) {
		t.Errorf("Resolve(app) with the file saying disabled = %v, want the enforcing refusal", err)
	}
	if w := r.Warnings(); len(w) != 1 || !strings.Contains(w[0], "short-name-mode in "+confPath+" is not used") {
		t.Errorf("Warnings() = %q", w)
	}
}

// TestWarningsForKeysLeftToOthers: keys CRI-O honours that the proxy does not
// are named by check-config.
func TestWarningsForKeysLeftToOthers(t *testing.T) {
	confPath, confDir := confFiles(t, `credential-helpers = ["secretservice"]
additional-layer-store-auth-helper = "helper"
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "m.example.com"
insecure = true
`, nil)
	r, err := New(confPath, confDir)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(r.Warnings(), "\n")
	for _, want := range []string{
		"credential-helpers in " + confPath + " is not used for mirror credentials",
		"additional-layer-store-auth-helper in " + confPath + " is not used",
		`rule prefix "quay.io" in ` + confPath + ": insecure = true for m.example.com: the runtime makes the pull",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
}

// TestWarningBlockedLocation: the warning about a blocked rule's rewritten
// location appears only when that location is really pulled.
func TestWarningBlockedLocation(t *testing.T) {
	for conf, want := range map[string]bool{
		"[[registry]]\nprefix = \"old.example.com\"\nlocation = \"new.example.com/old\"\nblocked = true\n":                                                               true,
		"[[registry]]\nprefix = \"old.example.com\"\nlocation = \"new.example.com/old\"\nblocked = true\n[[registry]]\nlocation = \"new.example.com\"\nblocked = true\n": false,
	} {
		r, err := New(confFiles(t, conf, nil))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Contains(strings.Join(r.Warnings(), "\n"), "pulls are still made from")
		if got != want {
			t.Errorf("warning %v, want %v for\n%s", got, want, conf)
		}
	}
}
