package resolver

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"
)

// rulesConf exercises every policy, wildcards, longest-prefix matching,
// blocking and remapping. Comments name the cases that rely on each rule.
const rulesConf = `
unqualified-search-registries = ["docker.io"]

# one mirror per policy
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000/all"
[[registry.mirror]]
location = "127.0.0.1:5001/tags"
pull-from-mirror = "tag-only"
insecure = true
[[registry.mirror]]
location = "127.0.0.1:5002/digests"
pull-from-mirror = "digest-only"

# longer prefix than docker.io
[[registry]]
prefix = "docker.io/library/busybox"
location = "docker.io/library/busybox"
[[registry.mirror]]
location = "mirror.local/bb"

# legacy mirror-by-digest-only
[[registry]]
location = "quay.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror.local/quay"

# wildcard without location: the reference is kept as is
[[registry]]
prefix = "*.example.com"
[[registry.mirror]]
location = "mirror.local/example"

# blocked, no mirrors (longer than the wildcard)
[[registry]]
location = "blocked.example.com"
blocked = true

# never contact source, tag-only mirror
[[registry]]
location = "gcr.io"
blocked = true
[[registry.mirror]]
location = "mirror.local/gcr"
pull-from-mirror = "tag-only"

# never contact source, two mirrors
[[registry]]
location = "registry.k8s.io"
blocked = true
[[registry.mirror]]
location = "mirror.local/k8s"
[[registry.mirror]]
location = "mirror2.local:8443/k8s"
pull-from-mirror = "digest-only"
insecure = true

# host with a port
[[registry]]
location = "localhost:5000"
insecure = true

# remapped source
[[registry]]
prefix = "internal.corp/team"
location = "registry.corp:8443/team-mirror"

# the first mirror lies under a blocked rule, so it is never used
[[registry]]
location = "mcr.microsoft.com"
[[registry.mirror]]
location = "blocked.example.com/mcr"
[[registry.mirror]]
location = "mirror.local/mcr"

# every mirror blocked, and the source too
[[registry]]
location = "nvcr.io"
blocked = true
[[registry.mirror]]
location = "blocked.example.com/nvcr"

# repository prefix with a host-only location: cannot rewrite "…/alpine:tag"
[[registry]]
prefix = "docker.io/library/alpine"
location = "alpine-mirror.local"

[aliases]
"nginx" = "docker.io/library/nginx"
`

func TestResolve(t *testing.T) {
	r := newTestResolver(t, rulesConf, nil)
	d := testDigest

	tests := []struct {
		name   string
		images []string // equivalent forms: all must resolve the same
		rule   string
		never  bool
		want   []string // Candidate.String() of each candidate
	}{
		{
			name: "tag: all and tag-only mirrors, then source",
			images: []string{
				"nginx", "nginx:latest", "library/nginx", "library/nginx:latest",
				"docker.io/library/nginx", "docker.io/library/nginx:latest", "index.docker.io/library/nginx:latest",
			},
			rule: "docker.io",
			want: []string{
				"127.0.0.1:5000/all/library/nginx:latest\tmirror\trule=docker.io\tpull-from-mirror=all",
				"127.0.0.1:5001/tags/library/nginx:latest\tmirror\trule=docker.io\tpull-from-mirror=tag-only\tinsecure",
				"docker.io/library/nginx:latest\tsource\trule=docker.io",
			},
		},
		{
			name: "digest: all and digest-only mirrors, then source; a tag beside the digest is dropped",
			images: []string{
				"nginx@" + d, "library/nginx@" + d, "docker.io/library/nginx@" + d,
				"nginx:1.27@" + d, "docker.io/library/nginx:1.27@" + d,
			},
			rule: "docker.io",
			want: []string{
				"127.0.0.1:5000/all/library/nginx@" + d + "\tmirror\trule=docker.io\tpull-from-mirror=all",
				"127.0.0.1:5002/digests/library/nginx@" + d + "\tmirror\trule=docker.io\tpull-from-mirror=digest-only",
				"docker.io/library/nginx@" + d + "\tsource\trule=docker.io",
			},
		},
		{
			name:   "user namespace on docker hub",
			images: []string{"someuser/app:v1", "docker.io/someuser/app:v1"},
			rule:   "docker.io",
			want: []string{
				"127.0.0.1:5000/all/someuser/app:v1\tmirror\trule=docker.io\tpull-from-mirror=all",
				"127.0.0.1:5001/tags/someuser/app:v1\tmirror\trule=docker.io\tpull-from-mirror=tag-only\tinsecure",
				"docker.io/someuser/app:v1\tsource\trule=docker.io",
			},
		},
		{
			name:   "longest prefix wins",
			images: []string{"busybox", "library/busybox:latest", "docker.io/library/busybox"},
			rule:   "docker.io/library/busybox",
			want: []string{
				"mirror.local/bb:latest\tmirror\trule=docker.io/library/busybox\tpull-from-mirror=all",
				"docker.io/library/busybox:latest\tsource\trule=docker.io/library/busybox",
			},
		},
		{
			name:   "longest prefix wins, digest",
			images: []string{"busybox@" + d, "docker.io/library/busybox:1@" + d},
			rule:   "docker.io/library/busybox",
			want: []string{
				"mirror.local/bb@" + d + "\tmirror\trule=docker.io/library/busybox\tpull-from-mirror=all",
				"docker.io/library/busybox@" + d + "\tsource\trule=docker.io/library/busybox",
			},
		},
		{
			name:   "a prefix matches whole path components only",
			images: []string{"busybox-extra:1", "docker.io/library/busybox-extra:1"},
			rule:   "docker.io",
			want: []string{
				"127.0.0.1:5000/all/library/busybox-extra:1\tmirror\trule=docker.io\tpull-from-mirror=all",
				"127.0.0.1:5001/tags/library/busybox-extra:1\tmirror\trule=docker.io\tpull-from-mirror=tag-only\tinsecure",
				"docker.io/library/busybox-extra:1\tsource\trule=docker.io",
			},
		},
		{
			name:   "mirror-by-digest-only: tag goes to the source only",
			images: []string{"quay.io/a/b:t"},
			rule:   "quay.io",
			want:   []string{"quay.io/a/b:t\tsource\trule=quay.io"},
		},
		{
			name:   "mirror-by-digest-only: digest uses the mirror",
			images: []string{"quay.io/a/b@" + d, "quay.io/a/b:t@" + d},
			rule:   "quay.io",
			want: []string{
				"mirror.local/quay/a/b@" + d + "\tmirror\trule=quay.io\tpull-from-mirror=digest-only",
				"quay.io/a/b@" + d + "\tsource\trule=quay.io",
			},
		},
		{
			name:   "wildcard subdomain",
			images: []string{"foo.example.com/app:1"},
			rule:   "*.example.com",
			want: []string{
				"mirror.local/example/app:1\tmirror\trule=*.example.com\tpull-from-mirror=all",
				"foo.example.com/app:1\tsource\trule=*.example.com",
			},
		},
		{
			name:   "wildcard matches several subdomain levels",
			images: []string{"a.b.example.com/x/y@" + d},
			rule:   "*.example.com",
			want: []string{
				"mirror.local/example/x/y@" + d + "\tmirror\trule=*.example.com\tpull-from-mirror=all",
				"a.b.example.com/x/y@" + d + "\tsource\trule=*.example.com",
			},
		},
		{
			name:   "wildcard does not match the bare domain",
			images: []string{"example.com/app:1"},
			want:   []string{"example.com/app:1\tsource\tno matching rule"},
		},
		{
			name:   "never contact source: tag uses the tag-only mirror only",
			images: []string{"gcr.io/p/img:1"},
			rule:   "gcr.io",
			never:  true,
			want:   []string{"mirror.local/gcr/p/img:1\tmirror\trule=gcr.io\tpull-from-mirror=tag-only"},
		},
		{
			name:   "never contact source: tag skips the digest-only mirror",
			images: []string{"registry.k8s.io/pause:3.10"},
			rule:   "registry.k8s.io",
			never:  true,
			want:   []string{"mirror.local/k8s/pause:3.10\tmirror\trule=registry.k8s.io\tpull-from-mirror=all"},
		},
		{
			name:   "never contact source: digest uses both mirrors",
			images: []string{"registry.k8s.io/pause@" + d},
			rule:   "registry.k8s.io",
			never:  true,
			want: []string{
				"mirror.local/k8s/pause@" + d + "\tmirror\trule=registry.k8s.io\tpull-from-mirror=all",
				"mirror2.local:8443/k8s/pause@" + d + "\tmirror\trule=registry.k8s.io\tpull-from-mirror=digest-only\tinsecure",
			},
		},
		{
			name:   "host with port",
			images: []string{"localhost:5000/x:1"},
			rule:   "localhost:5000",
			want:   []string{"localhost:5000/x:1\tsource\trule=localhost:5000\tinsecure"},
		},
		{
			name:   "same host without the port is another registry",
			images: []string{"localhost/x:1"},
			want:   []string{"localhost/x:1\tsource\tno matching rule"},
		},
		{
			name:   "remapped source",
			images: []string{"internal.corp/team/app:1"},
			rule:   "internal.corp/team",
			want:   []string{"registry.corp:8443/team-mirror/app:1\tsource\trule=internal.corp/team"},
		},
		{
			name:   "prefix stops at a path component",
			images: []string{"internal.corp/teamx/app:1"},
			want:   []string{"internal.corp/teamx/app:1\tsource\tno matching rule"},
		},
		{
			name:   "a mirror under a blocked rule is skipped",
			images: []string{"mcr.microsoft.com/dotnet/runtime:8.0"},
			rule:   "mcr.microsoft.com",
			want: []string{
				"mirror.local/mcr/dotnet/runtime:8.0\tmirror\trule=mcr.microsoft.com\tpull-from-mirror=all",
				"mcr.microsoft.com/dotnet/runtime:8.0\tsource\trule=mcr.microsoft.com",
			},
		},
		{
			name:   "no rule: passthrough",
			images: []string{"ghcr.io/o/r:1"},
			want:   []string{"ghcr.io/o/r:1\tsource\tno matching rule"},
		},
		{
			name:   "no rule: passthrough by digest",
			images: []string{"ghcr.io/o/r@" + d, "ghcr.io/o/r:1@" + d},
			want:   []string{"ghcr.io/o/r@" + d + "\tsource\tno matching rule"},
		},
	}
	for _, tt := range tests {
		for _, image := range tt.images {
			t.Run(tt.name+"/"+image, func(t *testing.T) {
				res, err := r.Resolve(image)
				if err != nil {
					t.Fatalf("Resolve(%q): %v", image, err)
				}
				var got []string
				for _, c := range res.Candidates {
					got = append(got, c.String())
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("candidates:\n got %q\nwant %q", got, tt.want)
				}
				if res.Rule != tt.rule {
					t.Errorf("Rule = %q, want %q", res.Rule, tt.rule)
				}
				if res.NeverContactSource != tt.never {
					t.Errorf("NeverContactSource = %v, want %v", res.NeverContactSource, tt.never)
				}
				checkCandidates(t, res)
			})
		}
	}
}

// checkCandidates asserts the invariants every successful Resolve keeps.
func checkCandidates(t testing.TB, res *Resolution) {
	t.Helper()
	if len(res.Candidates) == 0 {
		t.Fatal("no candidates")
	}
	if reference.IsNameOnly(res.Original) {
		t.Errorf("Original %s has neither tag nor digest", res.Original)
	}
	_, origDigested := res.Original.(reference.Canonical)
	for _, c := range res.Candidates {
		parsed, err := reference.ParseNamed(c.Ref.String())
		if err != nil {
			t.Errorf("candidate %s does not parse as a canonical reference: %v", c.Ref, err)
			continue
		}
		host, _, _ := strings.Cut(c.Location, "/")
		if got := reference.Domain(parsed); got != host {
			t.Errorf("candidate %s: domain %q, want the host of location %q", c.Ref, got, c.Location)
		}
		_, tagged := parsed.(reference.NamedTagged)
		_, digested := parsed.(reference.Canonical)
		if tagged == digested {
			t.Errorf("candidate %s: want exactly one of tag and digest", c.Ref)
		}
		if digested != origDigested {
			t.Errorf("candidate %s: digest-ness differs from original %s", c.Ref, res.Original)
		}
		if c.Source != (c.Policy == policySource) {
			t.Errorf("candidate %s: Source=%v with Policy %q", c.Ref, c.Source, c.Policy)
		}
		if res.NeverContactSource && c.Source {
			t.Errorf("candidate %s: source returned although NeverContactSource", c.Ref)
		}
	}
}

func TestResolveLocationAndOriginal(t *testing.T) {
	r := newTestResolver(t, rulesConf, nil)
	tests := []struct {
		image, original string
		locations       []string
	}{
		{"nginx", "docker.io/library/nginx:latest", []string{"127.0.0.1:5000/all", "127.0.0.1:5001/tags", "docker.io"}},
		{"nginx:1@" + testDigest, "docker.io/library/nginx@" + testDigest, []string{"127.0.0.1:5000/all", "127.0.0.1:5002/digests", "docker.io"}},
		{"foo.example.com/app:1", "foo.example.com/app:1", []string{"mirror.local/example", "foo.example.com"}},
		{"internal.corp/team/app:1", "internal.corp/team/app:1", []string{"registry.corp:8443/team-mirror"}},
		{"ghcr.io/o/r", "ghcr.io/o/r:latest", []string{"ghcr.io"}},
	}
	for _, tt := range tests {
		res, err := r.Resolve(tt.image)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", tt.image, err)
		}
		if res.Original.String() != tt.original {
			t.Errorf("Resolve(%q).Original = %s, want %s", tt.image, res.Original, tt.original)
		}
		var locs []string
		for _, c := range res.Candidates {
			locs = append(locs, c.Location)
		}
		if !slices.Equal(locs, tt.locations) {
			t.Errorf("Resolve(%q) locations = %q, want %q", tt.image, locs, tt.locations)
		}
	}
}

func TestResolveBlocked(t *testing.T) {
	r := newTestResolver(t, rulesConf, nil)
	tests := []struct {
		image, rule string
		reason      string // substring of Reason
	}{
		{"blocked.example.com/app:1", "blocked.example.com", "blocked = true, no mirrors"},
		{"blocked.example.com/app@" + testDigest, "blocked.example.com", "blocked = true, no mirrors"},
		// never contact source, and the only mirror is tag-only
		{"gcr.io/p/img@" + testDigest, "gcr.io", "none of its 1 mirror(s) applies to a digest reference"},
		{"nvcr.io/nim/x:1", "nvcr.io", "every candidate is blocked"},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			res, err := r.Resolve(tt.image)
			var be *BlockedError
			if !errors.As(err, &be) {
				t.Fatalf("Resolve(%q) = %v, %v; want *BlockedError", tt.image, res, err)
			}
			if be.Rule != tt.rule {
				t.Errorf("Rule = %q, want %q", be.Rule, tt.rule)
			}
			if !strings.Contains(be.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to contain %q", be.Reason, tt.reason)
			}
			if !strings.HasSuffix(be.File, "registries.conf") {
				t.Errorf("File = %q, want the registries.conf path", be.File)
			}
			msg := err.Error()
			for _, want := range []string{be.Image, `rule prefix "` + tt.rule + `"`, be.File} {
				if !strings.Contains(msg, want) {
					t.Errorf("Error() = %q, want it to contain %q", msg, want)
				}
			}
		})
	}
}

func TestBlockedErrorMessage(t *testing.T) {
	e := &BlockedError{Image: "docker.io/library/nginx:latest", Rule: "docker.io", Reason: "blocked = true, no mirrors"}
	want := `image "docker.io/library/nginx:latest" is blocked by registries.conf rule prefix "docker.io" (blocked = true, no mirrors)`
	if e.Error() != want {
		t.Errorf("got  %s\nwant %s", e.Error(), want)
	}
	e.File = "/etc/containers/registries.conf.d/50-block.conf"
	want = `image "docker.io/library/nginx:latest" is blocked by rule prefix "docker.io" in /etc/containers/registries.conf.d/50-block.conf (blocked = true, no mirrors)`
	if e.Error() != want {
		t.Errorf("got  %s\nwant %s", e.Error(), want)
	}
}

func TestResolveInvalidReference(t *testing.T) {
	r := newTestResolver(t, rulesConf, nil)
	for _, image := range []string{
		"",
		" ",
		"NGINX",
		"docker.io/Library/nginx",
		"nginx@sha256:abc",
		"nginx@sha256:" + strings.Repeat("z", 64),
		"nginx:",
		"nginx@",
		"::",
		":latest",
		"/nginx",
		"nginx/",
		"nginx latest",
		"http://docker.io/library/nginx",
		strings.Repeat("0123456789abcdef", 4), // looks like an image ID
		strings.Repeat("a", 300),              // name too long
		strings.Repeat("a/", 1000) + "a",
		strings.Repeat("x", 1<<20),
		"nginx:" + strings.Repeat("t", 129), // tag too long
		"nginx\x00",
		"\xff\xfe",
	} {
		res, err := r.Resolve(image)
		if !errors.Is(err, ErrInvalidReference) {
			t.Errorf("Resolve(%.40q) = %v, %v; want ErrInvalidReference", image, res, err)
		}
	}
}

func TestResolveRewriteFailure(t *testing.T) {
	r := newTestResolver(t, rulesConf, nil)
	// "alpine-mirror.local" + ":3.20" is not a repository.
	_, err := r.Resolve("alpine:3.20")
	if !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), `rule prefix "docker.io/library/alpine"`) {
		t.Errorf("Resolve(alpine:3.20) error = %v, want ErrInvalidReference naming the rule", err)
	}
	// Below the prefix the rewrite works.
	res, err := r.Resolve("docker.io/library/alpine/sub:1")
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Candidates[0].Ref.String(); got != "alpine-mirror.local/sub:1" {
		t.Errorf("got %s", got)
	}
}

// TestResolveHostPrefixCoversPorts: a host-only prefix matches the host with
// any port, as in containers/image, so a blocked host is blocked on every
// port and a mirrored one is rewritten (or fails to rewrite) as the library
// does.
func TestResolveHostPrefixCoversPorts(t *testing.T) {
	r := newTestResolver(t, `
[[registry]]
location = "127.0.0.1"
blocked = true

[[registry]]
location = "registry.corp"
[[registry.mirror]]
location = "mirror.corp"
`, nil)
	_, err := r.Resolve("127.0.0.1:5301/ns/app:v1")
	var be *BlockedError
	if !errors.As(err, &be) || be.Rule != "127.0.0.1" {
		t.Errorf("Resolve(127.0.0.1:5301/ns/app:v1) error = %v, want blocked by rule 127.0.0.1", err)
	}
	res, err := r.Resolve("registry.corp:5000/app:1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range res.Candidates {
		got = append(got, c.Ref.String())
	}
	if want := []string{"mirror.corp:5000/app:1", "registry.corp:5000/app:1"}; !slices.Equal(got, want) || res.Rule != "registry.corp" {
		t.Errorf("Resolve(registry.corp:5000/app:1) = %q by rule %q, want %q by rule registry.corp", got, res.Rule, want)
	}
	// A wildcard without location cannot rewrite a name with a port: the
	// library fails such a pull, and so do we.
	r = newTestResolver(t, rulesConf, nil)
	if _, err := r.Resolve("foo.example.com:5000/app:1"); !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), `rule prefix "*.example.com"`) {
		t.Errorf("Resolve(foo.example.com:5000/app:1) error = %v, want ErrInvalidReference naming the wildcard rule", err)
	}
}

// TestResolveBlockedRewrittenLocation: blocked applies to the address
// contacted, so a blocked rule whose location is elsewhere still pulls from
// that location, after its mirrors, and says why.
func TestResolveBlockedRewrittenLocation(t *testing.T) {
	r := newTestResolver(t, `
[[registry]]
prefix = "old.corp"
location = "new.corp/old"
blocked = true
[[registry.mirror]]
location = "mirror.corp/old"

[[registry]]
prefix = "gone.corp"
location = "new.corp/gone"
blocked = true
`, nil)
	for image, want := range map[string][]string{
		"old.corp/app:1":  {"mirror.corp/old/app:1", "new.corp/old/app:1"},
		"gone.corp/app:1": {"new.corp/gone/app:1"},
	} {
		res, err := r.Resolve(image)
		if err != nil {
			t.Fatalf("Resolve(%s): %v", image, err)
		}
		var got []string
		for _, c := range res.Candidates {
			got = append(got, c.Ref.String())
		}
		if !slices.Equal(got, want) || !res.Candidates[len(res.Candidates)-1].Source || res.NeverContactSource {
			t.Errorf("Resolve(%s) = %q (never contact source %t), want %q ending with the source", image, got, res.NeverContactSource, want)
		}
		if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "still pulled") {
			t.Errorf("Resolve(%s) notes = %q, want one explaining the location is still pulled", image, res.Notes)
		}
	}
}

func TestNoRules(t *testing.T) {
	r := newTestResolver(t, "", nil)
	for _, image := range []string{"nginx", "quay.io/a/b@" + testDigest, "localhost:5000/x:1"} {
		res, err := r.Resolve(image)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Candidates) != 1 || !res.Candidates[0].Source || res.Candidates[0].Ref.String() != res.Original.String() ||
			res.Candidates[0].Location != reference.Domain(res.Original) || res.Rule != "" {
			t.Errorf("Resolve(%q) = %+v, want the original as sole source candidate", image, res)
		}
		checkCandidates(t, res)
	}
}

func TestCandidateString(t *testing.T) {
	ref, err := reference.ParseNamed("127.0.0.1:5000/mirror/library/nginx:1.27")
	if err != nil {
		t.Fatal(err)
	}
	src, err := reference.ParseNamed("docker.io/library/nginx:1.27")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		c    Candidate
		want string
	}{
		{Candidate{Ref: ref, Location: "127.0.0.1:5000/mirror", Policy: "tag-only", Rule: "docker.io"},
			"127.0.0.1:5000/mirror/library/nginx:1.27\tmirror\trule=docker.io\tpull-from-mirror=tag-only"},
		{Candidate{Ref: ref, Location: "127.0.0.1:5000/mirror", Policy: "all", Rule: "docker.io", Insecure: true},
			"127.0.0.1:5000/mirror/library/nginx:1.27\tmirror\trule=docker.io\tpull-from-mirror=all\tinsecure"},
		{Candidate{Ref: src, Source: true, Location: "docker.io", Policy: "source", Rule: "docker.io"},
			"docker.io/library/nginx:1.27\tsource\trule=docker.io"},
		{Candidate{Ref: src, Source: true, Location: "docker.io", Policy: "source"},
			"docker.io/library/nginx:1.27\tsource\tno matching rule"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

func BenchmarkResolve(b *testing.B) {
	r := newTestResolver(b, rulesConf, nil)
	for b.Loop() {
		if _, err := r.Resolve("registry.k8s.io/pause:3.10"); err != nil {
			b.Fatal(err)
		}
	}
}
