//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// The kubelet e2e: a real kubelet (standalone, static pods, no API server) set up as the README
// recommends, with both CRI endpoints on the proxy, in front of a containerd of its own (the
// test restarts it). Pod status is read from kubelet's own API (/pods on a free port,
// anonymous, 127.0.0.1 only). The images run a small static binary (testdata/sleeper);
// containerd's sandbox image, registry.k8s.io/pause:3.6 (its default), is served by the
// source registry through certs.d: the pod sandbox is the runtime's own business.

const kubeletNodeName = "e2e-node"

// kubeletNode is the node: containerd, the proxy and kubelet, each stopped by pid.
type kubeletNode struct {
	t       *testing.T
	dir     string
	hosts   map[string]string
	ctd     *containerd
	proxy   *proxy
	kubelet *process
	bin     string // kubelet binary
	started time.Time
	// Host paths kubelet writes whatever its root dir (the device plugin socket, the container
	// log links), and whether each was there before.
	hostPaths map[string]bool
	port      int // kubelet's HTTPS API
	healthz   int
	client    *http.Client
}

// kubeletImages are the images the pods run, by the name the pods use.
type kubeletImages struct {
	tagged, always, victim, pinnedRepo string
	byName                             map[string]pushedImage
}

func TestKubelet(t *testing.T) {
	bin := filepath.Join(env.root, "test", ".bin", "kubelet")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kubelet not found at %s: run `bash test/tools.sh` (or `make tools`)", bin)
	}
	imgs := pushKubeletImages(t)
	k := startKubeletNode(t, bin)

	// An image pulled through the proxy before kubelet starts, and used by no pod: kubelet's
	// image garbage collection (high threshold 1%, minimum age 1s, maximum age 1m) must remove
	// it through the proxy, and its original name with it.
	victimID := k.proxy.mustPull(imgs.victim, imgs.byName[imgs.victim])
	if img := k.proxy.status(imgs.victim); img == nil {
		t.Fatalf("%s not found through the proxy right after its pull", imgs.victim)
	}

	pinned := imgs.pinnedRepo + "@" + imgs.byName[imgs.pinnedRepo].Digest
	k.writePod("tagged", imgs.tagged, "IfNotPresent")
	k.writePod("pinned", pinned, "IfNotPresent")
	k.writePod("always", imgs.always, "Always", "-exit-after=1s")
	k.writePod("missing", "docker.io/library/kmissing:1", "IfNotPresent")
	k.start()

	t.Run("TagMirror", func(t *testing.T) {
		want := imgs.byName[imgs.tagged]
		cs := k.waitRunning(t, "tagged")
		k.checkStatus(t, "tagged", cs, imgs.tagged, testenv.MustRepository(imgs.tagged)+"@"+want.Digest)
		// containerd itself names the mirror: this is what the proxy translates.
		direct := k.directStatus(t, cs.ContainerID)
		if !strings.HasPrefix(direct.GetImage().GetImage(), env.mirror.host+"/") {
			t.Errorf("containerd's own ContainerStatus image = %q, expected the mirror's name", direct.GetImage().GetImage())
		}
		k.checkCrictl(t, cs.ContainerID, imgs.tagged, testenv.MustRepository(imgs.tagged)+"@"+want.Digest)
	})

	t.Run("DigestMirror", func(t *testing.T) {
		cs := k.waitRunning(t, "pinned")
		if cs.ImageID != pinned {
			t.Errorf("pinned: imageID = %q, want %q", cs.ImageID, pinned)
		}
		k.checkNoMirror(t, "pinned", cs.Image, cs.ImageID)
		k.checkCrictl(t, cs.ContainerID, "", pinned)
	})

	t.Run("MissingImage", func(t *testing.T) {
		var cs kubeletContainerStatus
		err := waitFor(90*time.Second, "pod missing to fail its pull", func() error {
			var err error
			if cs, err = k.containerStatus("missing"); err != nil {
				return err
			}
			if w := cs.State.Waiting; w == nil || (w.Reason != "ErrImagePull" && w.Reason != "ImagePullBackOff") {
				return fmt.Errorf("state %+v", cs.State)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// kubelet shows the proxy's own account of the pull: every candidate and its error.
		if msg := cs.State.Waiting.Message; !strings.Contains(msg, "pull docker.io/library/kmissing:1: all 2 candidates failed") ||
			!strings.Contains(msg, env.mirror.host+"/ktag/library/kmissing:1") {
			t.Errorf("missing: waiting %s message %q, want the proxy's message naming every candidate", cs.State.Waiting.Reason, msg)
		}
	})

	t.Run("PullPolicyAlways", func(t *testing.T) {
		// The container exits after a second and kubelet restarts it; with imagePullPolicy
		// Always each start is a pull through the proxy. Successful pulls from the tag mirror:
		// the GC victim (before kubelet), tagged (once: IfNotPresent) and always at least twice.
		const want = 4
		var cs kubeletContainerStatus
		err := waitFor(2*time.Minute, "pod always to restart and be pulled again", func() error {
			n := k.proxy.metrics().Sum("cri_mirror_pull_attempts_total", map[string]string{"mirror": env.mirror.host + "/ktag", "result": "success"})
			if n < want {
				return fmt.Errorf("%v successful pulls from the tag mirror, want at least %d", n, want)
			}
			var err error
			if cs, err = k.containerStatus("always"); err != nil {
				return err
			}
			if cs.RestartCount < 1 {
				return fmt.Errorf("always: restartCount %d", cs.RestartCount)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		k.checkStatus(t, "always", cs, imgs.always, testenv.MustRepository(imgs.always)+"@"+imgs.byName[imgs.always].Digest)
	})

	// Restarts: pods keep running and keep their names; kubelet carries on with the restarted
	// part (a new pod starts) without being restarted itself.
	restarted := func(t *testing.T, what, newPod string) {
		t.Helper()
		before := k.runningIDs(t)
		k.writePod(newPod, imgs.tagged, "IfNotPresent")
		cs := k.waitRunning(t, newPod)
		k.checkStatus(t, newPod, cs, imgs.tagged, testenv.MustRepository(imgs.tagged)+"@"+imgs.byName[imgs.tagged].Digest)
		for _, pod := range []string{"tagged", "pinned"} {
			cs, err := k.containerStatus(pod)
			if err != nil {
				t.Fatal(err)
			}
			if cs.ContainerID != before[pod] || cs.State.Running == nil {
				t.Errorf("after the %s restart, %s: container %s running %v, want %s still running", what, pod, cs.ContainerID, cs.State.Running != nil, before[pod])
			}
		}
		cs, _ = k.containerStatus("tagged")
		k.checkStatus(t, "tagged", cs, imgs.tagged, testenv.MustRepository(imgs.tagged)+"@"+imgs.byName[imgs.tagged].Digest)
		k.checkCrictl(t, cs.ContainerID, imgs.tagged, testenv.MustRepository(imgs.tagged)+"@"+imgs.byName[imgs.tagged].Digest)
	}
	t.Run("ProxyRestart", func(t *testing.T) {
		k.proxy.restart()
		restarted(t, "proxy", "after-proxy")
	})
	t.Run("ContainerdRestart", func(t *testing.T) {
		k.restartContainerd()
		restarted(t, "containerd", "after-containerd")
	})
	// kubelet's image garbage collection runs at its start and then every 5 minutes (a fixed
	// period). The run at the start finds no image filesystem capacity yet (cadvisor's cache is
	// empty then), so the image goes in the second run, by its age (the maximum age needs no
	// filesystem stats; the high threshold does, and cadvisor does not always find the disk).
	t.Run("GarbageCollection", func(t *testing.T) {
		wait := time.Until(k.started.Add(7 * time.Minute))
		err := waitFor(wait, "kubelet's image GC to remove "+imgs.victim, func() error {
			if !strings.Contains(k.kubeletLogLine(`"Removing image`, victimID), victimID) {
				time.Sleep(time.Second)
				return fmt.Errorf("kubelet has not removed %s", victimID)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\n----- kubelet log (image GC) -----\n%s", err, k.logGrep("garbage", 20))
		}
		// The alias goes with the image: dropped by the proxy's RemoveImage, or, when another
		// call found the image gone first, as stale.
		err = waitFor(10*time.Second, "the proxy to drop the alias of "+imgs.victim, func() error {
			if !strings.Contains(k.proxyLogLine("dropped", victimID), victimID) {
				return fmt.Errorf("no alias of %s dropped in the proxy's log", victimID)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if img := k.proxy.status(imgs.victim); img != nil {
			t.Errorf("ImageStatus(%s) through the proxy after GC = %v, want not found", imgs.victim, img)
		}
		if k.runtimeHas(victimID) {
			t.Errorf("containerd still has %s after kubelet's GC", victimID)
		}
		if n := k.proxy.metrics().Sum("grpc_server_handled_total", map[string]string{"grpc_method": "RemoveImage", "grpc_code": "OK"}); n < 1 {
			t.Errorf("RemoveImage through the proxy counted %v times, want at least 1", n)
		}
		// The pods' images are in use and stay.
		for _, pod := range []string{"tagged", "pinned"} {
			if cs := k.waitRunning(t, pod); cs.State.Running == nil {
				t.Errorf("%s is not running after the GC", pod)
			}
		}
	})
	if !k.kubelet.running() {
		t.Errorf("kubelet exited: %s", k.kubelet.exitState())
	}
}

// --- images ---------------------------------------------------------------------------------

// pushKubeletImages builds testdata/sleeper and pushes the images the pods run: on a tag-only
// mirror (ktag), on a digest-only mirror (kdig), and the sandbox image on the source registry.
func pushKubeletImages(t *testing.T) kubeletImages {
	t.Helper()
	bin := filepath.Join(env.dir, "sleeper")
	if _, stderr, err := run(5*time.Minute, env.root, []string{"CGO_ENABLED=0"}, "go", "build", "-o", bin, "./test/e2e/testdata/sleeper"); err != nil {
		t.Fatalf("go build testdata/sleeper: %v\n%s", err, stderr)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	imgs := kubeletImages{
		tagged:     "docker.io/library/ksleeper:2",
		always:     "docker.io/library/kalways:1",
		victim:     "docker.io/library/kvictim:1",
		pinnedRepo: "docker.io/library/kpinned",
		byName:     map[string]pushedImage{},
	}
	layer, err := sleeperLayer(data)
	if err != nil {
		t.Fatal(err)
	}
	M := env.mirror.host + "/"
	for _, p := range []struct{ name, ref string }{
		{imgs.tagged, M + "ktag/library/ksleeper:2"},
		{imgs.always, M + "ktag/library/kalways:1"},
		{imgs.victim, M + "ktag/library/kvictim:1"},
		{imgs.pinnedRepo, M + "kdig/library/kpinned:v1"},
		{"pause", env.source.host + "/pause:3.6"},
	} {
		img, err := testenv.OfLayers(testenv.Arch, []v1.Layer{layer}, func(c *v1.Config) {
			c.Entrypoint = []string{"/sleeper"}
			c.Labels = map[string]string{"e2e.kubelet.image": p.name} // a distinct image each
		})
		if err != nil {
			t.Fatal(err)
		}
		if imgs.byName[p.name], err = testenv.PushAs(context.Background(), img, p.ref); err != nil {
			t.Fatal(err)
		}
	}
	return imgs
}

// sleeperLayer is a layer holding the sleeper binary as /sleeper, executable.
func sleeperLayer(bin []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "sleeper", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
}

// kubeletRules: docker.io from a tag-only mirror, then a digest-only one; the source itself
// leads to a closed port.
func kubeletRules() string {
	return fmt.Sprintf(`[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "%s/ktag"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "%s/kdig"
pull-from-mirror = "digest-only"
`, env.mirror.host, env.mirror.host)
}

// --- the node -------------------------------------------------------------------------------

// startKubeletNode starts containerd and the proxy; kubelet starts with start(). The test's
// cleanup stops kubelet, removes the pods at containerd, stops the proxy and containerd, and
// unmounts whatever is left under the node's directory.
func startKubeletNode(t *testing.T, bin string) *kubeletNode {
	t.Helper()
	k := &kubeletNode{t: t, dir: filepath.Join(env.dir, "k"), bin: bin}
	for _, d := range []string{"static", "root", "podlogs", "plugins"} {
		if err := os.MkdirAll(filepath.Join(k.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The other public hosts lead to a closed port (startContainerd).
	k.hosts = map[string]string{
		env.mirror.host:   "http://" + env.mirror.host,
		env.source.host:   "http://" + env.source.host,
		"registry.k8s.io": "http://" + env.source.host,
	}
	var err error
	if k.ctd, err = startContainerd(k.dir, k.hosts, env.closedURL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.tearDown) // registered first: runs after the proxy's own cleanup
	k.proxy = startProxyWith(t, kubeletRules(), proxyOpts{runtime: newContainerdRuntime(k.ctd)})
	t.Cleanup(k.stopKubelet) // runs first
	return k
}

// writePod writes a static pod with one container (host network: there is no CNI).
func (k *kubeletNode) writePod(name, image, pullPolicy string, args ...string) {
	k.t.Helper()
	argsJSON, _ := json.Marshal(args)
	pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
spec:
  hostNetwork: true
  restartPolicy: Always
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: %s
    imagePullPolicy: %s
    args: %s
`, name, image, pullPolicy, argsJSON)
	if err := os.WriteFile(filepath.Join(k.dir, "static", name+".yaml"), []byte(pod), 0o644); err != nil {
		k.t.Fatal(err)
	}
}

// start writes kubelet's configuration, as the README recommends it for the endpoints, and
// starts kubelet.
func (k *kubeletNode) start() {
	t := k.t
	t.Helper()
	var err error
	if k.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	if k.healthz, err = freePort(); err != nil {
		t.Fatal(err)
	}
	sock := "unix://" + k.proxy.sock
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %s
imageServiceEndpoint: %s
staticPodPath: %s
fileCheckFrequency: 1s
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
localStorageCapacityIsolation: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
serializeImagePulls: false
podLogsDir: %s
volumePluginDir: %s
imageGCHighThresholdPercent: 1
imageGCLowThresholdPercent: 0
imageMinimumGCAge: 1s
imageMaximumGCAge: 1m
`, sock, sock, filepath.Join(k.dir, "static"), k.port, k.healthz, filepath.Join(k.dir, "podlogs"), filepath.Join(k.dir, "plugins"))
	cfgPath := filepath.Join(k.dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	k.hostPaths = map[string]bool{}
	for _, p := range kubeletHostPaths {
		_, err := os.Lstat(p)
		k.hostPaths[p] = err == nil
	}
	k.started = time.Now()
	k.kubelet, err = startProcess("kubelet", filepath.Join(k.dir, "kubelet.log"), k.bin,
		"--config", cfgPath, "--root-dir", filepath.Join(k.dir, "root"),
		"--cert-dir", filepath.Join(k.dir, "root", "pki"),
		"--hostname-override", kubeletNodeName, "--v=2")
	if err != nil {
		t.Fatal(err)
	}
	k.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// kubelet serves its API with a self-signed certificate on 127.0.0.1.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	err = waitFor(60*time.Second, "kubelet /healthz", func() error {
		if !k.kubelet.running() {
			return fmt.Errorf("kubelet exited: %s\n%s", k.kubelet.exitState(), logTail(k.kubelet.logPath, 30))
		}
		resp, err := k.client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", k.healthz))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (k *kubeletNode) stopKubelet() {
	if k.t.Failed() && k.kubelet != nil {
		k.t.Logf("----- kubelet log %s (last 80 lines) -----\n%s", k.kubelet.logPath, logTail(k.kubelet.logPath, 80))
	}
	if k.kubelet != nil {
		k.kubelet.stop(15 * time.Second)
	}
}

// tearDown removes every pod at containerd (which stops their shims), stops containerd and
// unmounts what is left under the node's directory.
func (k *kubeletNode) tearDown() {
	if k.ctd != nil && k.ctd.proc.running() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if resp, err := k.ctd.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range resp.Items {
				if _, err := k.ctd.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
					k.t.Logf("stop pod sandbox %s: %v", sb.Id, err)
				}
				if _, err := k.ctd.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
					k.t.Logf("remove pod sandbox %s: %v", sb.Id, err)
				}
			}
		} else {
			k.t.Logf("list pod sandboxes: %v", err)
		}
	}
	if k.t.Failed() && k.ctd != nil {
		k.t.Logf("----- node containerd log (last 40 lines) -----\n%s", logTail(k.ctd.proc.logPath, 40))
	}
	if k.ctd != nil {
		k.ctd.close()
	}
	if err := unmountUnder(k.dir); err != nil {
		k.t.Error(err)
	}
	k.cleanHostPaths()
}

// kubeletHostPaths are written by kubelet outside its root dir: the device plugin socket and
// the links to container logs.
var kubeletHostPaths = []string{"/var/lib/kubelet", "/var/log/containers"}

// cleanHostPaths removes the links kubelet made to this node's container logs, and the host
// paths that were not there before kubelet started.
func (k *kubeletNode) cleanHostPaths() {
	if links, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, l := range links {
			p := filepath.Join("/var/log/containers", l.Name())
			if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, k.dir+"/") {
				os.Remove(p)
			}
		}
	}
	for p, existed := range k.hostPaths {
		if !existed {
			if err := os.RemoveAll(p); err != nil {
				k.t.Logf("removing %s: %v", p, err)
			}
		}
	}
}

// restartContainerd stops containerd (its shims, and so the pods, keep running) and starts it
// again on the same root, state and socket.
func (k *kubeletNode) restartContainerd() {
	k.t.Helper()
	k.ctd.close()
	var err error
	if k.ctd, err = startContainerd(k.dir, k.hosts, env.closedURL()); err != nil {
		k.t.Fatal(err)
	}
}

// --- kubelet's view -------------------------------------------------------------------------

// kubeletPodList is the part of kubelet's /pods answer (a v1.PodList) the test reads.
type kubeletPodList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Status struct {
			Phase             string                   `json:"phase"`
			ContainerStatuses []kubeletContainerStatus `json:"containerStatuses"`
		} `json:"status"`
	} `json:"items"`
}

type kubeletContainerStatus struct {
	Name         string `json:"name"`
	Image        string `json:"image"`
	ImageID      string `json:"imageID"`
	ContainerID  string `json:"containerID"`
	RestartCount int    `json:"restartCount"`
	State        struct {
		Running *struct {
			StartedAt string `json:"startedAt"`
		} `json:"running"`
		Waiting *struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"waiting"`
		Terminated *struct {
			Reason string `json:"reason"`
		} `json:"terminated"`
	} `json:"state"`
}

// containerStatus returns the status of static pod name's container from kubelet's /pods.
func (k *kubeletNode) containerStatus(name string) (kubeletContainerStatus, error) {
	resp, err := k.client.Get(fmt.Sprintf("https://127.0.0.1:%d/pods", k.port))
	if err != nil {
		return kubeletContainerStatus{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return kubeletContainerStatus{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return kubeletContainerStatus{}, fmt.Errorf("GET /pods: %s: %s", resp.Status, body)
	}
	var pods kubeletPodList
	if err := json.Unmarshal(body, &pods); err != nil {
		return kubeletContainerStatus{}, fmt.Errorf("GET /pods: %v", err)
	}
	for _, p := range pods.Items {
		if p.Metadata.Name == name+"-"+kubeletNodeName && len(p.Status.ContainerStatuses) == 1 {
			return p.Status.ContainerStatuses[0], nil
		}
	}
	return kubeletContainerStatus{}, fmt.Errorf("pod %s has no container status yet", name)
}

// waitRunning waits until pod name's container runs and returns its status.
func (k *kubeletNode) waitRunning(t *testing.T, name string) kubeletContainerStatus {
	t.Helper()
	var cs kubeletContainerStatus
	err := waitFor(2*time.Minute, "pod "+name+" to run", func() error {
		var err error
		if cs, err = k.containerStatus(name); err != nil {
			return err
		}
		if cs.State.Running == nil {
			return fmt.Errorf("state %+v", cs.State)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// runningIDs returns the container id of each running pod.
func (k *kubeletNode) runningIDs(t *testing.T) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, pod := range []string{"tagged", "pinned"} {
		ids[pod] = k.waitRunning(t, pod).ContainerID
	}
	return ids
}

// checkStatus asserts kubelet's container status shows the original image name and an image
// id under the original repository.
func (k *kubeletNode) checkStatus(t *testing.T, pod string, cs kubeletContainerStatus, image, imageID string) {
	t.Helper()
	if cs.Image != image {
		t.Errorf("%s: containerStatuses[].image = %q, want %q", pod, cs.Image, image)
	}
	if cs.ImageID != imageID {
		t.Errorf("%s: containerStatuses[].imageID = %q, want %q", pod, cs.ImageID, imageID)
	}
	k.checkNoMirror(t, pod, cs.Image, cs.ImageID)
}

func (k *kubeletNode) checkNoMirror(t *testing.T, what string, names ...string) {
	t.Helper()
	for _, n := range names {
		if strings.Contains(n, env.mirror.host) {
			t.Errorf("%s: %q names the mirror", what, n)
		}
	}
}

// checkCrictl asserts `crictl inspect` and `crictl ps` through the proxy show the original
// names of container id (kubelet's "containerd://<id>"). image "" skips the tag check (an image
// pulled by digest has no tag).
func (k *kubeletNode) checkCrictl(t *testing.T, containerID, image, imageRef string) {
	t.Helper()
	id := strings.TrimPrefix(containerID, "containerd://")
	out := k.proxy.mustCrictl("inspect", "-o", "json", id)
	var inspect struct {
		Status struct {
			Image struct {
				Image string `json:"image"`
			} `json:"image"`
			ImageRef string `json:"imageRef"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		t.Fatalf("crictl inspect %s: %v\n%s", id, err, out)
	}
	if image != "" && inspect.Status.Image.Image != image {
		t.Errorf("crictl inspect %s: status.image.image = %q, want %q", id, inspect.Status.Image.Image, image)
	}
	if inspect.Status.ImageRef != imageRef {
		t.Errorf("crictl inspect %s: status.imageRef = %q, want %q", id, inspect.Status.ImageRef, imageRef)
	}
	k.checkNoMirror(t, "crictl inspect "+id, inspect.Status.Image.Image, inspect.Status.ImageRef)

	out = k.proxy.mustCrictl("ps", "-o", "json", "--id", id)
	var ps struct {
		Containers []struct {
			ID    string `json:"id"`
			Image struct {
				Image string `json:"image"`
			} `json:"image"`
			ImageRef string `json:"imageRef"`
		} `json:"containers"`
	}
	if err := json.Unmarshal([]byte(out), &ps); err != nil || len(ps.Containers) != 1 {
		t.Fatalf("crictl ps --id %s: %v\n%s", id, err, out)
	}
	k.checkNoMirror(t, "crictl ps "+id, ps.Containers[0].Image.Image, ps.Containers[0].ImageRef)
	if image != "" {
		// crictl ps names the image by what kubelet created the container with (the image id);
		// --resolve-image-path asks ImageStatus for its name.
		if out := k.proxy.mustCrictl("ps", "--resolve-image-path", "--id", id); !strings.Contains(out, image) || strings.Contains(out, env.mirror.host) {
			t.Errorf("crictl ps --resolve-image-path --id %s: want %s, not the mirror's name:\n%s", id, image, out)
		}
	}
}

// directStatus asks the node's containerd itself.
func (k *kubeletNode) directStatus(t *testing.T, containerID string) *runtimeapi.ContainerStatus {
	t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := k.ctd.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: strings.TrimPrefix(containerID, "containerd://")})
	if err != nil {
		t.Fatalf("ContainerStatus on containerd: %v", err)
	}
	return resp.GetStatus()
}

func (k *kubeletNode) runtimeHas(id string) bool {
	k.t.Helper()
	ctx, cancel := callCtx()
	defer cancel()
	resp, err := k.ctd.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: id}})
	if err != nil {
		k.t.Fatalf("ImageStatus(%s) on containerd: %v", id, err)
	}
	return resp.GetImage() != nil
}

// proxyLogLine returns the first line of the proxy's log holding every one of words.
func (k *kubeletNode) proxyLogLine(words ...string) string {
	return logLine(k.proxy.logPath(), words...)
}

// logLine returns the first line of the file at path holding every one of words.
func logLine(path string, words ...string) string {
	b, _ := os.ReadFile(path)
lines:
	for _, line := range strings.Split(string(b), "\n") {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue lines
			}
		}
		return line
	}
	return ""
}

// kubeletLogLine is proxyLogLine for kubelet's log.
func (k *kubeletNode) kubeletLogLine(words ...string) string {
	return logLine(k.kubelet.logPath, words...)
}

// logGrep returns the last n lines of kubelet's log that contain word.
func (k *kubeletNode) logGrep(word string, n int) string {
	b, _ := os.ReadFile(k.kubelet.logPath)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(strings.ToLower(line), word) {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}
