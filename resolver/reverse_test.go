package resolver

import (
	"slices"
	"testing"
)

const reverseRules = `
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.test/hub"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "mirror.test/digests"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "gcr.io/x/app"
location = "gcr.io/x/app"
[[registry.mirror]]
location = "mirror.test/app"

# Two sources share one mirror namespace: a name under it is ambiguous.
[[registry]]
prefix = "quay.io/a"
location = "quay.io/a"
[[registry.mirror]]
location = "mirror.test/shared"
[[registry]]
prefix = "quay.io/b"
location = "quay.io/b"
[[registry.mirror]]
location = "mirror.test/shared"

# The rule rewrites the source itself.
[[registry]]
prefix = "old.test"
location = "new.test/old"

[[registry]]
prefix = "*.wild.test"
[[registry.mirror]]
location = "mirror.test/wild"
`

func TestOriginals(t *testing.T) {
	r := newTestResolver(t, reverseRules, nil)
	for _, tc := range []struct {
		ref  string
		want []string
	}{
		{"mirror.test/hub/library/nginx:1.27", []string{"docker.io/library/nginx:1.27"}},
		// tag-only: a digest under that mirror was never pulled for docker.io.
		{"mirror.test/hub/library/nginx@" + testDigest, nil},
		{"mirror.test/digests/library/nginx@" + testDigest, []string{"docker.io/library/nginx@" + testDigest}},
		{"mirror.test/digests/library/nginx:1.27", nil},
		// A repository-level prefix: the tag follows the location directly.
		{"mirror.test/app:v1", []string{"gcr.io/x/app:v1"}},
		{"mirror.test/app/sub:v1", []string{"gcr.io/x/app/sub:v1"}},
		{"mirror.test/application:v1", nil}, // not under the location, only a common prefix
		{"mirror.test/shared/img:v1", []string{"quay.io/a/img:v1", "quay.io/b/img:v1"}},
		{"new.test/old/img:v1", []string{"old.test/img:v1"}},
		{"mirror.test/wild/img:v1", nil}, // the wildcard's host is not in the name
		{"docker.io/library/nginx:1.27", nil},
		{"unrelated.test/img:v1", nil},
		{"not a reference", nil},
		{"sha256:" + testDigest[7:], nil},
	} {
		got := r.Originals(tc.ref)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Originals(%s) = %q, want %q", tc.ref, got, tc.want)
		}
	}
}
