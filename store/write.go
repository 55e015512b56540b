package store

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Put records a, replacing any alias with the same Name. A zero Created is
// set to now. It returns once the change is committed to disk.
//
// Re-recording an alias that already points at the same image through the
// same mirror is a no-op that keeps the original Created: with
// imagePullPolicy Always every container start is a pull, and each would
// otherwise cost an fsync.
func (s *Store) Put(a Alias) error {
	if err := a.validate(); err != nil {
		return err
	}
	if a.Created.IsZero() {
		a.Created = time.Now()
	}
	a.Created = normalizeTime(a.Created)

	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if old, ok := s.ix.byName[a.Name]; ok && old.ImageID == a.ImageID && old.Mirror == a.Mirror {
		return nil
	}
	if err := s.commit(func(b *bolt.Bucket) error {
		value, err := encode(a)
		if err != nil {
			return err
		}
		return b.Put([]byte(a.Name), value)
	}); err != nil {
		return fmt.Errorf("store alias %s in %s: %w", a.Name, s.path, err)
	}

	s.mu.Lock()
	s.ix.put(a)
	n := len(s.ix.byName)
	s.mu.Unlock()
	s.notify(n)
	return nil
}

// Delete removes the named aliases in one commit. Names that are not present
// are not an error; they are deleted from the file anyway, which also clears
// entries Open skipped as undecodable.
func (s *Store) Delete(names ...string) error {
	if len(names) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.deleteLocked(names)
}

// DeleteImage removes every alias of image id (with or without its
// "sha256:" prefix) in one commit and returns them, sorted by Name.
func (s *Store) DeleteImage(id string) ([]Alias, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	// Reading ix without mu is safe: only the wmu holder changes it.
	victims := s.ix.collect(s.ix.byImage[IDKey(id)])
	if err := s.unkeepImageLocked(id); err != nil {
		return nil, err
	}
	if len(victims) == 0 {
		return nil, nil
	}
	names := make([]string, len(victims))
	for i, a := range victims {
		names[i] = a.Name
	}
	if err := s.deleteLocked(names); err != nil {
		return nil, err
	}
	return victims, nil
}

// deleteLocked commits the deletion, then applies it to memory.
// The caller holds wmu.
func (s *Store) deleteLocked(names []string) error {
	if s.closed {
		return ErrClosed
	}
	err := s.commit(func(b *bolt.Bucket) error {
		for _, name := range names {
			if name == "" {
				continue // bbolt rejects empty keys; nothing can be stored there
			}
			if err := b.Delete([]byte(name)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete aliases from %s: %w", s.path, err)
	}

	removed := 0
	s.mu.Lock()
	for _, name := range names {
		if _, ok := s.ix.remove(name); ok {
			removed++
		}
	}
	n := len(s.ix.byName)
	s.mu.Unlock()
	if removed > 0 {
		s.notify(n)
	}
	return nil
}

// commit runs fn on the aliases bucket in one transaction; a volatile store
// has no file, so there is nothing to commit. The caller holds wmu.
func (s *Store) commit(fn func(b *bolt.Bucket) error) error {
	if s.volatile {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(aliasesBucket)) })
}

// Restore records, in one commit, those of as whose names are not in the
// table yet, and returns how many it added. It rebuilds a lost table: an
// alias recorded meanwhile (by a pull) is newer and is kept.
func (s *Store) Restore(as []Alias) (int, error) {
	now := time.Now()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	var add []Alias
	seen := map[string]bool{}
	for _, a := range as {
		if err := a.validate(); err != nil {
			return 0, err
		}
		if _, ok := s.ix.byName[a.Name]; ok || seen[a.Name] {
			continue
		}
		seen[a.Name] = true
		if a.Created.IsZero() {
			a.Created = now
		}
		a.Created = normalizeTime(a.Created)
		add = append(add, a)
	}
	if len(add) == 0 {
		return 0, nil
	}
	err := s.commit(func(b *bolt.Bucket) error {
		for _, a := range add {
			value, err := encode(a)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(a.Name), value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("restore aliases in %s: %w", s.path, err)
	}
	s.mu.Lock()
	for _, a := range add {
		s.ix.put(a)
	}
	n := len(s.ix.byName)
	s.mu.Unlock()
	s.notify(n)
	return len(add), nil
}
