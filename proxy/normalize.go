package proxy

import (
	"strings"
	"sync"
	"sync/atomic"

	"go.podman.io/image/v5/docker/reference"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
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

// nameCache remembers, for the image names callers ask about, how each
// normalises and what the alias table said about it. kubelet asks
// ImageStatus about the same few names before every container start,
// nearly always names without an alias: with the cache, such a call costs
// one map read without a lock and one atomic read of the table's
// generation, instead of two table lookups, a parse or a cache lock, and
// the normalised name built again.
//
// Entries are never changed, only replaced. Readers look in read, a map
// that is never written to; new and replaced entries go to dirty (under
// mu) and are merged into a new read map once lookups have missed read
// about as often as the merge costs. Bounded: emptied when full.
type nameCache struct {
	read   atomic.Pointer[map[string]*nameEntry]
	mu     sync.Mutex
	dirty  map[string]*nameEntry // entries newer than read's
	misses int                   // lookups that had to take mu since the last merge
}

// nameEntry is what the cache knows about one image name.
type nameEntry struct {
	named reference.Named // nil: not a reference (an image id)
	name  string          // named.String(), "" without named

	// What lookupAlias found in the alias table at generation gen: an
	// alias, none, or (digest) a digest of a repository with aliases,
	// which only the runtime can answer.
	looked  bool
	gen     uint64
	alias   store.Alias
	aliased bool
	digest  bool
}

const namesCacheSize = 4096

// entry returns the cached entry of image, nil if there is none. A fresh
// entry in dirty wins over an older one in read that does not satisfy ok.
func (c *nameCache) entry(image string, ok func(*nameEntry) bool) *nameEntry {
	if r := c.read.Load(); r != nil {
		if e := (*r)[image]; e != nil && ok(e) {
			return e
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.dirty[image]
	if e == nil {
		if r := c.read.Load(); r != nil {
			e = (*r)[image]
		}
	}
	c.misses++
	c.mergeLocked()
	return e
}

// put records e as the entry of image.
func (c *nameCache) put(image string, e *nameEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.dirty)
	if r := c.read.Load(); r != nil {
		n += len(*r)
	}
	if n >= namesCacheSize || c.dirty == nil {
		if n >= namesCacheSize {
			c.read.Store(nil)
		}
		c.dirty = make(map[string]*nameEntry)
		c.misses = 0
	}
	c.dirty[image] = e
	c.mergeLocked()
}

// mergeLocked moves dirty into a new read map once lookups have missed
// read at least as many times as the entries the merge copies, so that
// its cost per lookup stays constant. The caller holds mu.
func (c *nameCache) mergeLocked() {
	var old map[string]*nameEntry
	if r := c.read.Load(); r != nil {
		old = *r
	}
	if len(c.dirty) == 0 || c.misses < len(old)+len(c.dirty) {
		return
	}
	next := make(map[string]*nameEntry, len(old)+len(c.dirty))
	for k, v := range old {
		next[k] = v
	}
	for k, v := range c.dirty {
		next[k] = v
	}
	c.read.Store(&next)
	clear(c.dirty)
	c.misses = 0
}

// normalize returns how image normalises (see normalize), from the cache.
func (c *nameCache) normalize(image string) (reference.Named, bool) {
	e := c.named(image)
	return e.named, e.named != nil
}

// named returns the entry of image, with at least its normal form.
func (c *nameCache) named(image string) *nameEntry {
	if e := c.entry(image, func(*nameEntry) bool { return true }); e != nil {
		return e
	}
	e := &nameEntry{}
	if named, ok := normalize(image); ok {
		e.named, e.name = named, named.String()
	}
	c.put(image, e)
	return e
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
