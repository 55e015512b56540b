package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A mirror reference can be both the name an alias was pulled under (the
// proxy hides it behind the original) and a name a client asked for by
// itself (which must stay visible). The kept names record the second kind,
// beside the aliases: name → image id, in the "kept" bucket.

// KeepName records that name was asked for by itself and names image id.
// Recording it again for the same image is a no-op.
func (s *Store) KeepName(name, id string) error {
	if name == "" || id == "" {
		return fmt.Errorf("kept name %q without an image id", name)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if kid, ok := s.ix.kept[name]; ok && IDKey(kid) == IDKey(id) {
		return nil
	}
	if err := s.commitKept(func(b *bolt.Bucket) error { return b.Put([]byte(name), []byte(id)) }); err != nil {
		return fmt.Errorf("keep name %s in %s: %w", name, s.path, err)
	}
	s.mu.Lock()
	s.ix.kept[name] = id
	s.ix.gen.Add(1) // what a listing shows changes
	s.mu.Unlock()
	return nil
}

// Kept reports whether name was asked for by itself for image id.
func (s *Store) Kept(name, id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	kid, ok := s.ix.kept[name]
	return ok && IDKey(kid) == IDKey(id)
}

// unkeepImageLocked forgets the kept names of image id. The caller holds wmu.
func (s *Store) unkeepImageLocked(id string) error {
	var names []string
	for name, kid := range s.ix.kept {
		if IDKey(kid) == IDKey(id) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	err := s.commitKept(func(b *bolt.Bucket) error {
		for _, name := range names {
			if err := b.Delete([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget kept names of %s in %s: %w", id, s.path, err)
	}
	s.mu.Lock()
	for _, name := range names {
		delete(s.ix.kept, name)
	}
	s.ix.gen.Add(1)
	s.mu.Unlock()
	return nil
}

func (s *Store) commitKept(fn func(b *bolt.Bucket) error) error {
	if s.volatile {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(keptBucket)) })
}
