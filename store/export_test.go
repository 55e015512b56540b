package store

import (
	"cmp"
	"slices"
)

// List returns every alias, sorted by Name: for tests, which look at the
// whole table; the proxy only ever asks by name, image or repository.
func (s *Store) List() []Alias {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Alias, 0, len(s.ix.byName))
	for _, a := range s.ix.byName {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Alias) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Path is the database file, for tests.
func (s *Store) Path() string { return s.path }
