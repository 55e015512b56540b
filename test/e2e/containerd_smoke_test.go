//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerdSmoke checks the environment itself, without the proxy: containerd pulls from
// the mirror registry and, through certs.d, from the "source.test" registry; public registries
// are unreachable (connection refused on loopback), so nothing can leave the machine.
func TestContainerdSmoke(t *testing.T) {
	cleanImages(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, tc := range []struct {
		ref  string
		want pushedImage
	}{
		{env.mirror.host + "/m1/e2e/smoke:v1", env.image("M:m1/e2e/smoke:v1")},
		{sourceHost + "/e2e/smoke:v1", env.image("S:e2e/smoke:v1")},
	} {
		resp, err := env.ctd.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: tc.ref}})
		if err != nil {
			t.Fatalf("containerd PullImage(%s): %v", tc.ref, err)
		}
		if resp.GetImageRef() != tc.want.ID {
			t.Errorf("containerd PullImage(%s) = %s, want %s", tc.ref, resp.GetImageRef(), tc.want.ID)
		}
		st, err := env.ctd.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: tc.ref}})
		if err != nil || st.GetImage() == nil {
			t.Fatalf("containerd ImageStatus(%s) = %v, %v", tc.ref, st.GetImage(), err)
		}
		// containerd names an image after the reference it pulled: this is what the proxy hides.
		if tags := st.GetImage().GetRepoTags(); len(tags) != 1 || tags[0] != tc.ref {
			t.Errorf("containerd repo_tags = %q, want [%s]", tags, tc.ref)
		}
	}

	start := time.Now()
	_, err := env.ctd.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:latest"}})
	if err == nil {
		t.Fatal("pulling docker.io/library/busybox:latest succeeded; public registries must be unreachable in this environment")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a pull from a public registry took %s to fail; it should be refused at once (closed loopback port)", d)
	}
	if !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("public pull error %q does not mention the loopback port it was pointed at", err)
	}

	out, stderr, err := run(time.Minute, "", nil, env.crictl, "--runtime-endpoint", "unix://"+env.ctd.sock,
		"--image-endpoint", "unix://"+env.ctd.sock, "--timeout", "30s", "images")
	if err != nil || !strings.Contains(out, sourceHost+"/e2e/smoke") {
		t.Errorf("crictl images on containerd: %v\n%s%s", err, out, stderr)
	}
}
