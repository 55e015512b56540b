package proxy

import (
	"strings"
	"sync"

	"go.podman.io/image/v5/docker/reference"
)

// normalize returns the name a CRI runtime would store for image, the same
// normalisation the resolver applies: short names gain docker.io/library/
// and :latest, a tag next to a digest is dropped. ok is false for image ids
// and anything that is not a reference.
func normalize(image string) (reference.Named, bool) {
	named, err := reference.ParseDockerRef(image)
	if err != nil {
		return nil, false
	}
	return named, true
}

// nameCache remembers how image names normalise. kubelet asks ImageStatus
// about the same few names before every container start; parsing each time
// was a tenth of the proxy's allocations on that path. Bounded: cleared
// when full.
type nameCache struct {
	mu sync.Mutex
	m  map[string]reference.Named // nil value: not a reference (an image id)
}

const namesCacheSize = 4096

func (n *nameCache) normalize(image string) (reference.Named, bool) {
	n.mu.Lock()
	named, ok := n.m[image]
	n.mu.Unlock()
	if ok {
		return named, named != nil
	}
	named, _ = normalize(image)
	n.mu.Lock()
	if n.m == nil || len(n.m) >= namesCacheSize {
		n.m = make(map[string]reference.Named, 64)
	}
	n.m[image] = named
	n.mu.Unlock()
	return named, named != nil
}

// isImageID tells an image id ("sha256:<64 hex>" as containerd reports it,
// the bare hex as CRI-O does) from an image name.
func isImageID(s string) bool {
	hexPart := strings.TrimPrefix(s, "sha256:")
	if len(hexPart) != 64 {
		return false
	}
	for _, r := range hexPart {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}
