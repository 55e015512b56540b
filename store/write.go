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
	if s.db == nil {
		return ErrClosed
	}
	if old, ok := s.ix.byName[a.Name]; ok && old.ImageID == a.ImageID && old.Mirror == a.Mirror {
		return nil
	}
	value, err := encode(a)
	if err != nil {
		return fmt.Errorf("encode alias %s: %w", a.Name, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(aliasesBucket).Put([]byte(a.Name), value)
	})
	if err != nil {
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

// DeleteImage removes every alias of image id in one commit and returns
// them, sorted by Name.
func (s *Store) DeleteImage(id string) ([]Alias, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.db == nil {
		return nil, ErrClosed
	}
	// Reading ix without mu is safe: only the wmu holder changes it.
	victims := s.ix.collect(s.ix.byImage[id])
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
	if s.db == nil {
		return ErrClosed
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(aliasesBucket)
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
