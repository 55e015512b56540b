package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// schemaVersion is written to meta/schema. Bump it only with a migration.
const schemaVersion = "1"

var (
	aliasesBucket = []byte("aliases")
	metaBucket    = []byte("meta")
	schemaKey     = []byte("schema")
)

var (
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("locked by another process")
	// ErrClosed is returned by writes after Close.
	ErrClosed = errors.New("alias store closed")
)

// Store is the alias table: an in-memory index backed by a bbolt file.
// It is safe for concurrent use.
type Store struct {
	path     string
	onChange func(int)

	// wmu serialises writers, and is held across the bbolt commit. Only its
	// holder mutates ix, so the holder may read ix without mu.
	wmu sync.Mutex
	db  *bolt.DB // nil after Close

	// mu guards ix against readers; it is held only for in-memory work,
	// never across disk I/O.
	mu sync.RWMutex
	ix *index
}

// Open opens or creates the alias table at path and loads it into memory.
// The parent directory is created 0700 and the file 0600: the table reveals
// which images a node runs.
func Open(path string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("alias store %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("alias store %s: %w (gave up after %s)", path, ErrLocked, o.lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("alias store %s: %w", path, err)
	}

	s := &Store{path: path, onChange: o.onChange, db: db, ix: newIndex()}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("alias store %s: %w", path, err)
	}
	skipped, err := s.load()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("alias store %s: load: %w", path, err)
	}
	for _, sk := range skipped {
		o.log.WithField("path", path).WithField("alias", sk.key).WithError(sk.err).
			Warn("skipping undecodable alias; it will be recorded again on the next pull")
	}
	s.notify(len(s.ix.byName))
	return s, nil
}

// initSchema creates the buckets of a new file and refuses a file written by
// a newer schema.
func initSchema(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	switch v := meta.Get(schemaKey); {
	case v == nil:
		if err := meta.Put(schemaKey, []byte(schemaVersion)); err != nil {
			return err
		}
	case string(v) != schemaVersion:
		return fmt.Errorf("schema version %q is not supported (this binary understands %q)", v, schemaVersion)
	}
	_, err = tx.CreateBucketIfNotExists(aliasesBucket)
	return err
}

type skippedEntry struct {
	key string
	err error
}

func (s *Store) load() ([]skippedEntry, error) {
	var skipped []skippedEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(aliasesBucket).ForEach(func(k, v []byte) error {
			a, err := decode(k, v)
			if err != nil {
				skipped = append(skipped, skippedEntry{key: string(k), err: err})
				return nil
			}
			s.ix.put(a)
			return nil
		})
	})
	return skipped, err
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close releases the file. Reads keep answering from memory afterwards;
// writes fail with ErrClosed. Closing twice is not an error.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("alias store %s: close: %w", s.path, err)
	}
	return nil
}

// notify reports the count; callers hold wmu so reports arrive in commit order.
func (s *Store) notify(n int) {
	if s.onChange != nil {
		s.onChange(n)
	}
}
