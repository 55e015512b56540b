//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// pinnedIndex is a multi-arch image as pushed: an OCI index listing a foreign platform, an
// attestation (unknown/unknown) and, unless left out, the node's platform.
type pinnedIndex struct {
	index   v1.ImageIndex
	digest  string // of the index: what a pod pins
	bytes   []byte // the index exactly as pushed
	native  v1.Image
	child   string // digest of the native manifest
	id      string // config digest of the native image: the CRI image id
	foreign v1.Image
}

func foreignArch() string {
	if testenv.Arch == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func newPinnedIndex(t *testing.T, withNative bool) pinnedIndex {
	t.Helper()
	var m pinnedIndex
	var err error
	if m.native, err = testenv.Random(1024, 1, testenv.Arch); err != nil {
		t.Fatal(err)
	}
	if m.foreign, err = testenv.Random(1024, 1, foreignArch()); err != nil {
		t.Fatal(err)
	}
	att, err := testenv.Random(1024, 1, "unknown")
	if err != nil {
		t.Fatal(err)
	}
	add := []mutate.IndexAddendum{
		{Add: m.foreign, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: foreignArch()}}},
		{Add: att, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}},
	}
	if withNative {
		add = append(add, mutate.IndexAddendum{Add: m.native, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: testenv.Arch}}})
	}
	m.index = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), add...)
	d, err := m.index.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m.digest = d.String()
	if m.bytes, err = m.index.RawManifest(); err != nil {
		t.Fatal(err)
	}
	c, err := m.native.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m.child = c.String()
	id, err := m.native.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	m.id = id.String()
	return m
}

func mustRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushChild pushes only the node's manifest of m (and its blobs) to repo, as a mirror that
// copied one platform holds it.
func (m pinnedIndex) pushChild(t *testing.T, repo string) {
	t.Helper()
	if err := remote.Write(mustRef(t, repo+":native"), m.native); err != nil {
		t.Fatalf("push the native manifest to %s: %v", repo, err)
	}
}

// pushSparse pushes the whole index to repo, then deletes the node's manifest: the registry is
// left with the index bytes (digest unchanged) and the other platforms, a sparse index.
func (m pinnedIndex) pushSparse(t *testing.T, repo string) {
	t.Helper()
	if err := remote.WriteIndex(mustRef(t, repo+":full"), m.index); err != nil {
		t.Fatalf("push the index to %s: %v", repo, err)
	}
	if err := remote.Delete(mustRef(t, repo+"@"+m.child)); err != nil {
		t.Fatalf("delete the native manifest from %s: %v", repo, err)
	}
	got, err := remote.Get(mustRef(t, repo+"@"+m.digest))
	if err != nil {
		t.Fatalf("%s does not keep the index without its native manifest: %v", repo, err)
	}
	if string(got.Manifest) != string(m.bytes) {
		t.Fatalf("%s serves other bytes for %s", repo, m.digest)
	}
	if _, err := remote.Get(mustRef(t, repo+"@"+m.child)); err == nil {
		t.Fatalf("%s still serves the native manifest after its deletion", repo)
	}
}

// TestDigestSubstitution: a pod pinned to the digest of a multi-arch index, whose mirror holds
// only the node's platform, pulls through the proxy with the index bytes from each place they
// can come from, never with bytes that do not hash to the digest, and shows under its original
// digest reference, also after a restart.
func TestDigestSubstitution(t *testing.T) {
	eachRuntime(t, func(t *testing.T, rt *criRuntime) {
		M, S := env.mirror.host, env.source.host
		closed := fmt.Sprintf("127.0.0.1:%d", env.closedPort)
		indexDir := filepath.Join(env.dir, "indexes-"+rt.name)
		if err := os.MkdirAll(indexDir, 0o755); err != nil {
			t.Fatal(err)
		}
		// ggcr is a second mirror registry (go-containerregistry's, in this process): unlike
		// docker-registry 2.8 it does not serve a blob at /manifests/, so a companion artifact
		// there is found only as what it is.
		ggcr := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(ggcr.Close)
		G := strings.TrimPrefix(ggcr.URL, "http://")
		rt.allowHost(t, G, ggcr.URL)

		// closed/ma: the source is a closed port; ma1 holds children only, ma2 sparse indexes,
		// G/ma3 companion artifacts.
		// S/ma-src: the source (insecure: plain HTTP) holds a sparse index.
		// S/ma-ncs: never contact the source, though it has the whole image.
		conf := fmt.Sprintf(`
	[[registry]]
	prefix = "%[1]s/ma"
	location = "%[1]s/ma"
	insecure = true
	[[registry.mirror]]
	location = "%[2]s/ma1"
	insecure = true
	[[registry.mirror]]
	location = "%[2]s/ma2"
	insecure = true
	[[registry.mirror]]
	location = "%[4]s/ma3"
	insecure = true

	[[registry]]
	prefix = "%[3]s/ma-src"
	location = "%[3]s/ma-src"
	insecure = true
	[[registry.mirror]]
	location = "%[2]s/ma1src"
	insecure = true

	[[registry]]
	prefix = "%[3]s/ma-ncs"
	location = "%[3]s/ma-ncs"
	blocked = true
	[[registry.mirror]]
	location = "%[2]s/ma1ncs"
	insecure = true
	`, closed, M, S, G)
		p := startProxyWith(t, conf, proxyOpts{runtime: rt, args: []string{"--index-dir", indexDir}})
		saveIndex := func(digest string, b []byte) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(indexDir, strings.Replace(digest, ":", "-", 1)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		substitutions := func(from, result string) float64 {
			return p.metrics().Sum("cri_mirror_digest_substitutions_total", map[string]string{"index_from": from, "result": result})
		}
		// pulled checks a pull by digest served the native image under the original names.
		pulled := func(t *testing.T, original string, m pinnedIndex) {
			t.Helper()
			id, err := p.pull(original)
			if err != nil {
				t.Fatalf("PullImage(%s): %v", original, err)
			}
			if id != rt.idForm(m.id) {
				t.Fatalf("PullImage(%s) = %s, want the native image %s", original, id, rt.idForm(m.id))
			}
			img := p.status(original)
			if img == nil || img.GetId() != rt.idForm(m.id) {
				t.Fatalf("ImageStatus(%s) = %v, want %s", original, img, rt.idForm(m.id))
			}
			if len(img.RepoDigests) == 0 || img.RepoDigests[0] != original {
				t.Errorf("repo_digests %q, want %s first", img.RepoDigests, original)
			}
			for _, n := range append(img.GetRepoTags(), img.GetRepoDigests()...) {
				if strings.HasPrefix(n, env.mirror.host+"/") {
					t.Errorf("ImageStatus(%s) shows the mirror's name %s", original, n)
				}
			}
			if img := p.status(testenv.MustRepository(original) + "@" + m.child); img == nil || img.GetId() != rt.idForm(m.id) {
				t.Errorf("ImageStatus(repo@child) = %v, want %s", img, rt.idForm(m.id))
			}
		}
		// notPulled checks that the runtime holds no image of m.
		notPulled := func(t *testing.T, m pinnedIndex) {
			t.Helper()
			ctx, cancel := callCtx()
			defer cancel()
			resp, err := rt.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: rt.idForm(m.id)}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetImage() != nil {
				t.Errorf("the runtime holds %s (%q)", rt.idForm(m.id), resp.GetImage().GetRepoDigests())
			}
		}

		a := newPinnedIndex(t, true)
		originalA := closed + "/ma/a@" + a.digest
		t.Run("sparse index on another mirror", func(t *testing.T) {
			a.pushChild(t, M+"/ma1/a")
			a.pushSparse(t, M+"/ma2/a")
			before := substitutions("mirror", "success")
			pulled(t, originalA, a)
			if n := substitutions("mirror", "success") - before; n != 1 {
				t.Errorf("substitutions{index_from=mirror,result=success} grew by %v, want 1", n)
			}
			if !hasLogLine(readFile(p.logPath()), "digest substitution", a.digest, a.child, "index_from=mirror") {
				t.Errorf("no log line of the substitution with D, C and the index source")
			}
			_, stderr, err := run(time.Minute, "", nil, env.proxyBin, "resolve", "--registries-conf", p.conf, "--registries-conf-dir", p.confDir,
				"--index-dir", indexDir, originalA)
			if err != nil || !strings.Contains(stderr, "digest substitution looks for index bytes") || !strings.Contains(stderr, M+"/ma1/a:sha256-") {
				t.Errorf("resolve does not explain the substitution (%v):\n%s", err, stderr)
			}
		})

		t.Run("index from the source", func(t *testing.T) {
			b := newPinnedIndex(t, true)
			b.pushChild(t, M+"/ma1src/b")
			b.pushSparse(t, S+"/ma-src/b")
			before := substitutions("source", "success")
			pulled(t, S+"/ma-src/b@"+b.digest, b)
			if n := substitutions("source", "success") - before; n != 1 {
				t.Errorf("substitutions{index_from=source,result=success} grew by %v, want 1", n)
			}
		})

		t.Run("index directory", func(t *testing.T) {
			c := newPinnedIndex(t, true)
			c.pushChild(t, M+"/ma1/c")
			saveIndex(c.digest, c.bytes)
			pulled(t, closed+"/ma/c@"+c.digest, c)
			if substitutions("index_dir", "success") < 1 {
				t.Errorf("no substitution counted with index_from=index_dir")
			}
		})

		// publishTo publishes the index of d (pushed whole to the source registry) into the
		// companion of host/repo.
		var publishTo func(t *testing.T, d pinnedIndex, host, repo string)
		publish := func(t *testing.T, d pinnedIndex, repo string) {
			publishTo(t, d, M, repo)
		}
		publishTo = func(t *testing.T, d pinnedIndex, host, repo string) {
			t.Helper()
			src := S + "/pub/" + strings.ReplaceAll(repo, "/", "-")
			if err := remote.WriteIndex(mustRef(t, src+":v1"), d.index); err != nil {
				t.Fatal(err)
			}
			out, stderr, err := run(time.Minute, "", nil, env.proxyBin, "publish-index", "--insecure", src+"@"+d.digest, host+"/"+repo)
			if err != nil {
				t.Fatalf("publish-index: %v\n%s%s", err, out, stderr)
			}
			if !strings.Contains(out, host+"/"+repo+":sha256-"+strings.TrimPrefix(d.digest, "sha256:")+".index") {
				t.Errorf("publish-index output %q does not name the companion tag", out)
			}
		}

		t.Run("companion artifact on another mirror", func(t *testing.T) {
			d := newPinnedIndex(t, true)
			d.pushChild(t, M+"/ma1/d")
			publishTo(t, d, G, "ma3/d")
			before := substitutions("companion", "success")
			pulled(t, closed+"/ma/d@"+d.digest, d)
			if n := substitutions("companion", "success") - before; n != 1 {
				t.Errorf("substitutions{index_from=companion,result=success} grew by %v, want 1:\n%s", n, grepLog(p.logPath(), "digest substitution"))
			}
		})

		// docker-registry 2.8 serves the companion's layer, the index bytes, at
		// /manifests/<index digest> of its repository too: beside the child, the runtime pulls by
		// the index digest by itself.
		t.Run("companion artifact beside the child", func(t *testing.T) {
			d := newPinnedIndex(t, true)
			d.pushChild(t, M+"/ma1/d2")
			publish(t, d, "ma1/d2")
			original := closed + "/ma/d2@" + d.digest
			if id, err := p.pull(original); err != nil || id != rt.idForm(d.id) {
				t.Fatalf("PullImage(%s) = %s, %v; want %s", original, id, err, rt.idForm(d.id))
			}
			if img := p.status(original); img == nil || img.GetId() != rt.idForm(d.id) || img.RepoDigests[0] != original {
				t.Errorf("ImageStatus(%s) = %v", original, img)
			}
		})

		t.Run("stripped index with a new digest on the mirror", func(t *testing.T) {
			e := newPinnedIndex(t, true)
			stripped := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: e.native, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: testenv.Arch}}})
			if err := remote.WriteIndex(mustRef(t, M+"/ma1/e:v1"), stripped); err != nil {
				t.Fatal(err)
			}
			if sd, _ := stripped.Digest(); sd.String() == e.digest {
				t.Fatal("the stripped index has the original digest")
			}
			saveIndex(e.digest, e.bytes)
			pulled(t, closed+"/ma/e@"+e.digest, e)
		})

		t.Run("bytes that do not hash to the digest", func(t *testing.T) {
			f := newPinnedIndex(t, true)
			f.pushChild(t, M+"/ma1/f")
			saveIndex(f.digest, append(append([]byte{}, f.bytes...), '\n'))
			before := substitutions("none", "no_index")
			_, err := p.pull(closed + "/ma/f@" + f.digest)
			if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "no index with digest "+f.digest) {
				t.Fatalf("PullImage with tampered index bytes: %v, want a refusal", err)
			}
			notPulled(t, f)
			if n := substitutions("none", "no_index") - before; n != 1 {
				t.Errorf("substitutions{index_from=none,result=no_index} grew by %v, want 1", n)
			}
		})

		t.Run("index without the node's platform", func(t *testing.T) {
			g := newPinnedIndex(t, false)
			if err := remote.Write(mustRef(t, M+"/ma1/g:foreign"), g.foreign); err != nil {
				t.Fatal(err)
			}
			saveIndex(g.digest, g.bytes)
			_, err := p.pull(closed + "/ma/g@" + g.digest)
			want := fmt.Sprintf("no manifest for platform linux/%s: the index lists linux/%s, unknown/unknown", testenv.Arch, foreignArch())
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("PullImage of an index without the node's platform: %v, want an error with %q", err, want)
			}
		})

		t.Run("never contact the source", func(t *testing.T) {
			h := newPinnedIndex(t, true)
			if err := remote.WriteIndex(mustRef(t, S+"/ma-ncs/h:v1"), h.index); err != nil {
				t.Fatal(err)
			}
			h.pushChild(t, M+"/ma1ncs/h")
			saveIndex(h.digest, h.bytes)
			pulled(t, S+"/ma-ncs/h@"+h.digest, h)
			if n := env.source.manifestRequests("ma-ncs/h"); n != 0 {
				t.Errorf("the source got %d manifest requests under NeverContactSource", n)
			}
		})

		t.Run("names after a restart", func(t *testing.T) {
			p.restart()
			img := p.status(originalA)
			if img == nil || img.GetId() != rt.idForm(a.id) {
				t.Fatalf("ImageStatus(%s) after a restart = %v, want %s", originalA, img, rt.idForm(a.id))
			}
			if img.RepoDigests[0] != originalA {
				t.Errorf("repo_digests after a restart %q, want %s first", img.RepoDigests, originalA)
			}
		})
	})
}

// grepLog returns the lines of the log at path that contain s.
func grepLog(path, s string) string {
	var out []string
	for _, line := range strings.Split(readFile(path), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
