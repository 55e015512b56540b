package store

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is written to meta/schema. Bump it only with a migration.
const schemaVersion = "1"

var (
	aliasesBucket = []byte("aliases")
	keptBucket    = []byte("kept")
	tagsBucket    = []byte("tags")
	metaBucket    = []byte("meta")
	schemaKey     = []byte("schema")
)

var (
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("locked by another process")
	// ErrClosed is returned by writes after Close.
	ErrClosed = errors.New("alias store closed")

	errNewerSchema = errors.New("schema version is not supported")
)

// Store is the alias table: an in-memory index backed by a bbolt file.
// It is safe for concurrent use.
type Store struct {
	path     string
	onChange func(int)
	maxTags  int // see WithMaxTagRecords

	// movedAside is where Open put a damaged file ("" if it found none).
	movedAside string
	// volatile is set when the file cannot be written (a read-only state
	// directory): the table then lives in memory only, and db is nil.
	volatile bool

	// wmu serialises writers, and is held across the bbolt commit. Only its
	// holder mutates ix, so the holder may read ix without mu.
	wmu    sync.Mutex
	db     *bolt.DB // nil after Close, and while volatile
	closed bool

	// mu guards ix against readers; it is held only for in-memory work,
	// never across disk I/O.
	mu sync.RWMutex
	ix *index
}

// Open opens or creates the alias table at path and loads it into memory.
// The parent directory is created 0700 and the file 0600: the table reveals
// which images a node runs.
//
// The table only saves re-pulls, while a proxy that does not start stops
// every image pull on the node, so Open starts whenever it can:
//   - A damaged file (bbolt refuses it, or panics or faults reading it, as
//     it does on torn writes and truncation) is renamed to
//     path.damaged-<UTC time>, kept for inspection, and an empty table is
//     created in its place; MovedAside reports where it went.
//   - A file that cannot be written (a read-only state directory) is read
//     if it can be, and the table is kept in memory only; Volatile reports
//     it, and nothing recorded survives a restart.
//
// Both are logged as errors. A file locked by another process (ErrLocked)
// and a schema newer than this binary are still errors: the first is
// another proxy on the same state, the second a file not to be guessed at.
func Open(path string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	log := o.log.WithField("path", path)
	s := &Store{path: path, onChange: o.onChange, maxTags: o.maxTags, ix: newIndex()}

	if err := writable(path); err != nil {
		s.volatile = true
		s.ix = readOnly(path, log)
		log.WithError(err).WithField("aliases", len(s.ix.byName)).
			Error("alias database cannot be written: keeping aliases in memory only; original names of images pulled from mirrors will not survive a restart")
		s.notify(len(s.ix.byName))
		return s, nil
	}

	db, ix, skipped, err := openFile(path, o.lockTimeout)
	if err != nil && !errors.Is(err, ErrLocked) && !errors.Is(err, errNewerSchema) {
		moved, merr := moveAside(path)
		if merr != nil {
			return nil, fmt.Errorf("alias store %s: %w (moving it aside failed: %v)", path, err, merr)
		}
		log.WithError(err).WithField("moved_to", moved).
			Error("alias database is damaged: moved aside, starting with an empty table")
		s.movedAside = moved
		db, ix, skipped, err = openFile(path, o.lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("alias store %s: %w", path, err)
	}
	s.db, s.ix = db, ix
	for _, sk := range skipped {
		log.WithField("alias", sk.key).WithError(sk.err).
			Warn("skipping undecodable alias; it will be recorded again on the next pull")
	}
	s.notify(len(s.ix.byName))
	return s, nil
}

// MovedAside returns where Open moved a damaged file, or "".
func (s *Store) MovedAside() string { return s.movedAside }

// Volatile reports whether the table is kept in memory only because its
// file cannot be written.
func (s *Store) Volatile() bool { return s.volatile }

// checkSchema refuses a file written by a newer schema.
func checkSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return nil
	}
	if v := meta.Get(schemaKey); v != nil && string(v) != schemaVersion {
		return fmt.Errorf("%w: %q (this binary understands %q)", errNewerSchema, v, schemaVersion)
	}
	return nil
}

// initSchema creates the buckets of a new file (or of one written before
// the schema was recorded).
func initSchema(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	if meta.Get(schemaKey) == nil {
		if err := meta.Put(schemaKey, []byte(schemaVersion)); err != nil {
			return err
		}
	}
	if _, err = tx.CreateBucketIfNotExists(aliasesBucket); err != nil {
		return err
	}
	_, err = tx.CreateBucketIfNotExists(keptBucket)
	return err
}

type skippedEntry struct {
	key string
	err error
}

// loadTx reads every alias into ix; undecodable ones are skipped and
// returned.
func loadTx(tx *bolt.Tx, ix *index) ([]skippedEntry, error) {
	var skipped []skippedEntry
	err := tx.Bucket(aliasesBucket).ForEach(func(k, v []byte) error {
		a, err := decode(k, v)
		if err != nil {
			skipped = append(skipped, skippedEntry{key: string(k), err: err})
			return nil
		}
		ix.put(a)
		return nil
	})
	if err != nil {
		return skipped, err
	}
	loadTags(tx, ix)
	if b := tx.Bucket(keptBucket); b != nil {
		err = b.ForEach(func(k, v []byte) error {
			if len(k) > 0 && len(v) > 0 {
				ix.kept[string(k)] = string(v)
			}
			return nil
		})
	}
	return skipped, err
}

// Close releases the file. Reads keep answering from memory afterwards;
// writes fail with ErrClosed. Closing twice is not an error.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.closed = true
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
