package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/proxy"
)

// TestPublishIndex: the companion holds the index bytes exactly, as its
// single layer, under the tag the proxy looks for; a single image is refused.
func TestPublishIndex(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(host+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	if err := remote.WriteIndex(ref("src/app:v1"), idx); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref("src/single:v1"), img); err != nil {
		t.Fatal(err)
	}
	want, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(want)

	var out bytes.Buffer
	cfg := publishConfig{source: host + "/src/app:v1", mirror: host + "/mirror/app", insecure: true, authFile: t.TempDir() + "/auth.json"}
	if err := publishIndex(context.Background(), cfg, &out); err != nil {
		t.Fatalf("publish-index: %v", err)
	}
	tag := proxy.CompanionTag(d)
	if !strings.Contains(out.String(), host+"/mirror/app:"+tag) {
		t.Errorf("output %q does not name the companion tag %s", out.String(), tag)
	}
	desc, err := remote.Get(ref("mirror/app:" + tag))
	if err != nil {
		t.Fatalf("companion: %v", err)
	}
	var m imgspecv1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 || m.Layers[0].Digest != d {
		t.Fatalf("companion layers %+v, want one layer %s", m.Layers, d)
	}
	blob, err := name.NewDigest(host+"/mirror/app@"+d.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	l, err := remote.Layer(blob)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("companion layer differs from the index bytes (%v)", err)
	}

	// By digest: the same; a single image: refused, nothing written.
	cfg.source = host + "/src/app@" + d.String()
	if err := publishIndex(context.Background(), cfg, io.Discard); err != nil {
		t.Errorf("publish-index by digest: %v", err)
	}
	cfg.source, cfg.mirror = host+"/src/single:v1", host+"/mirror/single"
	if err := publishIndex(context.Background(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "not an index") {
		t.Errorf("publish-index of a single image: %v, want a refusal", err)
	}
	cfg.mirror = host + "/mirror/app:tag"
	cfg.source = host + "/src/app:v1"
	if err := publishIndex(context.Background(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "MIRROR_REPOSITORY") {
		t.Errorf("publish-index to a tagged mirror reference: %v, want an error naming MIRROR_REPOSITORY", err)
	}
}
