package proxy

import (
	"fmt"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/fakecri"
)

// BenchmarkListContainersScan is what the proxy adds to a ListContainers
// answer that names no mirror (kubelet's relist, every second): reading the
// image fields of 100 containers from the undecoded answer, with 1,000
// aliases recorded. Compare with BenchmarkListContainersDecode, the cost of
// decoding and encoding the same answer.
func BenchmarkListContainersScan(b *testing.B) {
	s, raw := benchListContainers(b)
	b.ReportAllocs()
	for b.Loop() {
		if s.anyRawNamesChange(raw, 1, containerFields) {
			b.Fatal("names a mirror")
		}
	}
}

func BenchmarkListContainersDecode(b *testing.B) {
	_, raw := benchListContainers(b)
	b.ReportAllocs()
	for b.Loop() {
		var resp runtimeapi.ListContainersResponse
		if err := proto.Unmarshal(raw, &resp); err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(&resp); err != nil {
			b.Fatal(err)
		}
	}
}

func benchListContainers(b *testing.B) (*Server, []byte) {
	aliases, err := store.Open(filepath.Join(b.TempDir(), "aliases.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { aliases.Close() })
	for i := range 1000 {
		id := fakecri.IDOf(fmt.Sprint("aliased", i))
		if err := aliases.Put(store.Alias{Name: fmt.Sprintf("docker.io/team/app-%d:1", i), ImageID: id, Mirror: fmt.Sprintf("mirror.test/hub/team/app-%d:1", i)}); err != nil {
			b.Fatal(err)
		}
	}
	// As containerd lists them: the image id kubelet created each container with.
	resp := &runtimeapi.ListContainersResponse{}
	for i := range 100 {
		id := fakecri.IDOf(fmt.Sprint("image", i))
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: fmt.Sprintf("%064d", i), PodSandboxId: fmt.Sprintf("%064d", i+1000),
			Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
			Image:    &runtimeapi.ImageSpec{Image: id, UserSpecifiedImage: fmt.Sprintf("registry.example.com/app-%d:1", i)},
			ImageRef: id, ImageId: id, State: runtimeapi.ContainerState_CONTAINER_RUNNING,
			Labels: map[string]string{"io.kubernetes.pod.name": fmt.Sprint("pod", i), "io.kubernetes.pod.namespace": "default"},
		})
	}
	raw, err := proto.Marshal(resp)
	if err != nil {
		b.Fatal(err)
	}
	return New(nil, nil, aliases), raw
}
