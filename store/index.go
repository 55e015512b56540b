package store

import (
	"slices"
	"strings"
	"sync/atomic"
)

// index is the in-memory copy of the table. It has no locking of its own;
// Store guards it.
type index struct {
	byName map[string]Alias
	// The secondary indexes map a key to the sorted names under it. A key
	// has one or a few names (an image's tags, a repository's tags), where
	// a sorted slice costs a fraction of a map and reads back in order.
	byImage  map[string][]string // IDKey(image id) → names
	byMirror map[string][]string // mirror ref → names
	byRepo   map[string][]string // repository of the name → names
	// gen counts changes, so readers can tell a table they saw from a newer
	// one. It changes under the write lock, after the change, and is read
	// without the lock (Generation).
	gen atomic.Uint64
	// kept maps a name asked for by itself (KeepName) to its image id.
	kept map[string]string
	// tags maps a tag reference to the digest last seen for it (tags.go).
	tags map[string]TagRecord
}

func newIndex() *index {
	return &index{
		byName:   make(map[string]Alias),
		byImage:  make(map[string][]string),
		byMirror: make(map[string][]string),
		byRepo:   make(map[string][]string),
		kept:     make(map[string]string),
		tags:     make(map[string]TagRecord),
	}
}

func (ix *index) put(a Alias) {
	if old, ok := ix.byName[a.Name]; ok {
		unlink(ix.byImage, IDKey(old.ImageID), old.Name)
		unlink(ix.byMirror, old.Mirror, old.Name)
		unlink(ix.byRepo, Repository(old.Name), old.Name)
	}
	ix.byName[a.Name] = a
	ix.gen.Add(1)
	link(ix.byImage, IDKey(a.ImageID), a.Name)
	link(ix.byMirror, a.Mirror, a.Name)
	link(ix.byRepo, Repository(a.Name), a.Name)
}

func (ix *index) remove(name string) (Alias, bool) {
	a, ok := ix.byName[name]
	if !ok {
		return Alias{}, false
	}
	delete(ix.byName, name)
	ix.gen.Add(1)
	unlink(ix.byImage, IDKey(a.ImageID), name)
	unlink(ix.byMirror, a.Mirror, name)
	unlink(ix.byRepo, Repository(name), name)
	return a, true
}

// collect returns the named aliases, in the order given (sorted by Name).
// The result is a copy: callers may keep it after the lock is released.
func (ix *index) collect(names []string) []Alias {
	if len(names) == 0 {
		return nil
	}
	out := make([]Alias, len(names))
	for i, name := range names {
		out[i] = ix.byName[name]
	}
	return out
}

// link adds name to the sorted names under key.
func link(m map[string][]string, key, name string) {
	names := m[key]
	if i, found := slices.BinarySearch(names, name); !found {
		m[key] = slices.Insert(names, i, name)
	}
}

// unlink removes name from the names under key, and the key with its last name.
func unlink(m map[string][]string, key, name string) {
	names := m[key]
	i, found := slices.BinarySearch(names, name)
	switch {
	case !found:
	case len(names) == 1:
		delete(m, key)
	default:
		m[key] = slices.Delete(names, i, i+1)
	}
}

// Repository strips the tag or digest of a normalised reference
// ("docker.io/library/nginx:1.27" → "docker.io/library/nginx"). Names in the
// table are normalised, so string work is enough, and it is cheap on the
// paths that run before every container start.
func Repository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	return ref
}

// IDKey is the form in which the table compares image ids: containerd
// reports "sha256:<hex>", CRI-O the bare hex, and callers may use either,
// so an id is the same image with or without the prefix.
func IDKey(id string) string { return strings.TrimPrefix(id, "sha256:") }
