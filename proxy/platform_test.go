package proxy

import (
	"encoding/json"
	"errors"

	"runtime"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// entry is one manifest of a test index: its platform as os/arch[/variant],
// or "" for none.
type entry struct {
	platform string
	digest   digest.Digest
}

func dg(name string) digest.Digest { return digest.FromString(name) }

// indexJSON renders entries as an OCI index or a Docker manifest list.
func indexJSON(t *testing.T, docker bool, entries ...entry) []byte {
	t.Helper()
	listType, childType := "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"
	if docker {
		listType, childType = "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"
	}
	var ms []map[string]any
	for _, e := range entries {
		m := map[string]any{"mediaType": childType, "digest": e.digest, "size": 100}
		if e.platform != "" {
			parts := strings.Split(e.platform, "/")
			p := map[string]string{"os": parts[0], "architecture": parts[1]}
			if len(parts) > 2 {
				p["variant"] = parts[2]
			}
			m["platform"] = p
		}
		ms = append(ms, m)
	}
	b, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": listType, "manifests": ms})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestChooseChild(t *testing.T) {
	for _, docker := range []bool{false, true} {
		kind := "oci index"
		if docker {
			kind = "docker manifest list"
		}
		for _, tc := range []struct {
			name     string
			entries  []entry
			want     Platform
			child    string
			platform string
			err      string
		}{
			{name: "amd64 second", want: Platform{OS: "linux", Architecture: "amd64"},
				entries: []entry{{"linux/arm64/v8", dg("arm64")}, {"linux/amd64", dg("amd64")}},
				child:   "amd64", platform: "linux/amd64"},
			{name: "attestation listed first never matches",
				want:    Platform{OS: "linux", Architecture: "amd64"},
				entries: []entry{{"unknown/unknown", dg("att")}, {"linux/amd64", dg("amd64")}, {"unknown/unknown", dg("att2")}},
				child:   "amd64", platform: "linux/amd64"},
			{name: "only attestations for the platform",
				want:    Platform{OS: "linux", Architecture: "amd64"},
				entries: []entry{{"linux/arm64", dg("arm64")}, {"unknown/unknown", dg("att")}},
				err:     "no manifest for platform linux/amd64: the index lists linux/arm64, unknown/unknown"},
			{name: "arm v7 falls back to v6", want: Platform{OS: "linux", Architecture: "arm", Variant: "v7"},
				entries: []entry{{"linux/arm/v5", dg("v5")}, {"linux/arm/v6", dg("v6")}, {"linux/arm/v8", dg("v8")}},
				child:   "v6", platform: "linux/arm/v6"},
			{name: "arm v7 exact wins over v6", want: Platform{OS: "linux", Architecture: "arm", Variant: "v7"},
				entries: []entry{{"linux/arm/v6", dg("v6")}, {"linux/arm/v7", dg("v7")}},
				child:   "v7", platform: "linux/arm/v7"},
			{name: "arm64 without variant matches v8", want: Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
				entries: []entry{{"linux/amd64", dg("amd64")}, {"linux/arm64", dg("arm64")}},
				child:   "arm64", platform: "linux/arm64"},
			{name: "arm v6 does not take v7", want: Platform{OS: "linux", Architecture: "arm", Variant: "v6"},
				entries: []entry{{"linux/arm/v7", dg("v7")}},
				err:     "no manifest for platform linux/arm/v6: the index lists linux/arm/v7"},
			{name: "other os", want: Platform{OS: "windows", Architecture: "amd64"},
				entries: []entry{{"linux/amd64", dg("amd64")}},
				err:     "no manifest for platform windows/amd64: the index lists linux/amd64"},
		} {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				child, platform, err := chooseChild(indexJSON(t, docker, tc.entries...), tc.want)
				if tc.err != "" {
					if err == nil || err.Error() != tc.err {
						t.Fatalf("chooseChild = %s, %v; want error %q", child, err, tc.err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if child != dg(tc.child) || platform != tc.platform {
					t.Errorf("chooseChild = %s (%s), want %s (%s)", child, platform, dg(tc.child), tc.platform)
				}
			})
		}
	}
}

// TestChooseChildNodeDefault: with no platform set, the node's own
// architecture is chosen.
func TestChooseChildNodeDefault(t *testing.T) {
	other := "s390x"
	idx := indexJSON(t, false, entry{"linux/" + other, dg(other)}, entry{"linux/" + runtime.GOARCH, dg("native")})
	if runtime.GOOS != "linux" {
		t.Skip("the index lists linux only")
	}
	child, _, err := chooseChild(idx, Platform{})
	if err != nil || child != dg("native") {
		t.Errorf("chooseChild(node default) = %s, %v; want %s", child, err, dg("native"))
	}
}

func TestChooseChildNotIndex(t *testing.T) {
	m := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + dg("c").String() + `","size":2},"layers":[]}`)
	if _, _, err := chooseChild(m, Platform{}); !errors.Is(err, errNotIndex) {
		t.Errorf("chooseChild(image manifest) = %v, want errNotIndex", err)
	}
	if _, _, err := chooseChild([]byte("not json"), Platform{}); err == nil {
		t.Error("chooseChild(garbage) succeeded")
	}
}

func TestParsePlatform(t *testing.T) {
	for in, want := range map[string]string{
		"":                runtime.GOOS + "/" + runtime.GOARCH,
		"linux/amd64":     "linux/amd64",
		"linux/arm64/v8":  "linux/arm64/v8",
		"linux":           "error",
		"linux/":          "error",
		"linux/arm/v7/x":  "error",
		"windows/amd64:1": "error",
	} {
		p, err := ParsePlatform(in)
		got := p.String()
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParsePlatform(%q) = %s (%v), want %s", in, got, err, want)
		}
	}

}
