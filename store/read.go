package store

import (
	"bytes"
	"slices"
)

// Get returns the alias recorded under name.
func (s *Store) Get(name string) (Alias, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.ix.byName[name]
	return a, ok
}

// ByImage returns every alias of one image id, with or without its
// "sha256:" prefix, sorted by Name.
func (s *Store) ByImage(id string) []Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ix.collect(s.ix.byImage[IDKey(id)])
}

// ByMirror returns the aliases whose Mirror is mirrorRef, sorted by Name.
func (s *Store) ByMirror(mirrorRef string) []Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ix.collect(s.ix.byMirror[mirrorRef])
}

// ByRepository returns the aliases whose Name is in repository repo (a
// name without tag or digest), sorted by Name.
func (s *Store) ByRepository(repo string) []Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ix.collect(s.ix.byRepo[repo])
}

// Len returns the number of aliases.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ix.byName)
}

// HasImage reports whether an alias points at image id, with or without its
// "sha256:" prefix. It takes the id as bytes, as read from a runtime's
// undecoded answer, without copying it.
func (s *Store) HasImage(id []byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.ix.byImage[string(bytes.TrimPrefix(id, []byte("sha256:")))]
	return ok
}

// Images returns how many distinct image ids the aliases point at, and the
// generation of the table: it changes with every change to the table.
func (s *Store) Images() (n int, generation uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ix.byImage), s.ix.gen.Load()
}

// Generation returns the generation of the table (see Images) without
// taking the lock: one atomic read, for callers on a hot path that keep
// what they derived from the table tagged with the generation it was read
// at. A change is in the table before its generation is.
func (s *Store) Generation() uint64 { return s.ix.gen.Load() }

// ImageIDs returns the image ids that aliases and kept names point at, in
// no order, each once and in the form it was recorded (compare them through
// IDKey).
func (s *Store) ImageIDs() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]string, 0, len(s.ix.byImage))
	for _, names := range s.ix.byImage {
		ids = append(ids, s.ix.byName[names[0]].ImageID)
	}
	for _, id := range s.ix.kept {
		if _, ok := s.ix.byImage[IDKey(id)]; !ok && !slices.ContainsFunc(ids, func(i string) bool { return IDKey(i) == IDKey(id) }) {
			ids = append(ids, id)
		}
	}
	return ids
}
