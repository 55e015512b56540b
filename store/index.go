package store

import (
	"cmp"
	"slices"
	"strings"
)

// index is the in-memory copy of the table. It has no locking of its own;
// Store guards it.
type index struct {
	byName   map[string]Alias
	byImage  map[string]map[string]struct{} // image id → names
	byMirror map[string]map[string]struct{} // mirror ref → names
	byRepo   map[string]map[string]struct{} // repository of the name → names
	// sorted holds every alias ordered by Name so that List, the call that
	// sees thousands of aliases, is a copy rather than a sort.
	sorted []Alias
}

func newIndex() *index {
	return &index{
		byName:   make(map[string]Alias),
		byImage:  make(map[string]map[string]struct{}),
		byMirror: make(map[string]map[string]struct{}),
		byRepo:   make(map[string]map[string]struct{}),
	}
}

func byName(a Alias, name string) int { return cmp.Compare(a.Name, name) }

func (ix *index) put(a Alias) {
	if old, ok := ix.byName[a.Name]; ok {
		unlink(ix.byImage, old.ImageID, old.Name)
		unlink(ix.byMirror, old.Mirror, old.Name)
		unlink(ix.byRepo, Repository(old.Name), old.Name)
	}
	ix.byName[a.Name] = a
	link(ix.byImage, a.ImageID, a.Name)
	link(ix.byMirror, a.Mirror, a.Name)
	link(ix.byRepo, Repository(a.Name), a.Name)

	// Load walks bbolt in key order, so this is an append in the common case.
	i, found := slices.BinarySearchFunc(ix.sorted, a.Name, byName)
	if found {
		ix.sorted[i] = a
	} else {
		ix.sorted = slices.Insert(ix.sorted, i, a)
	}
}

func (ix *index) remove(name string) (Alias, bool) {
	a, ok := ix.byName[name]
	if !ok {
		return Alias{}, false
	}
	delete(ix.byName, name)
	unlink(ix.byImage, a.ImageID, name)
	unlink(ix.byMirror, a.Mirror, name)
	unlink(ix.byRepo, Repository(name), name)
	if i, found := slices.BinarySearchFunc(ix.sorted, name, byName); found {
		ix.sorted = slices.Delete(ix.sorted, i, i+1)
	}
	return a, true
}

// collect returns the aliases named in set, sorted by Name.
func (ix *index) collect(set map[string]struct{}) []Alias {
	if len(set) == 0 {
		return nil
	}
	out := make([]Alias, 0, len(set))
	for name := range set {
		out = append(out, ix.byName[name])
	}
	slices.SortFunc(out, func(a, b Alias) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func link(m map[string]map[string]struct{}, key, name string) {
	set, ok := m[key]
	if !ok {
		set = make(map[string]struct{})
		m[key] = set
	}
	set[name] = struct{}{}
}

func unlink(m map[string]map[string]struct{}, key, name string) {
	set := m[key]
	delete(set, name)
	if len(set) == 0 {
		delete(m, key)
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
