package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// openFile opens the bbolt file at path, creates or checks the schema and
// loads the aliases into a new index. bbolt trusts its file: on a torn or
// truncated one it panics ("invalid freelist page", "unreachable
// unfreed"...) or faults on a page past the end of the mapping instead of
// returning an error. Both are turned into errors here, so a damaged file
// is a condition the caller handles, not a crash loop.
func openFile(path string, lockTimeout time.Duration) (db *bolt.DB, ix *index, skipped []skippedEntry, err error) {
	// A fault on mapped memory is fatal to the process unless the
	// goroutine asked for a panic; bbolt reads its pages on this goroutine.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				closeQuietly(db)
			}
			db, ix, skipped = nil, nil, nil
			err = fmt.Errorf("damaged database: %v", r)
		}
	}()

	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, nil, nil, fmt.Errorf("%w (gave up after %s)", ErrLocked, lockTimeout)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	// Read before writing anything: a damaged file must be moved aside as
	// it was found.
	ix = newIndex()
	fresh := false
	err = db.View(func(tx *bolt.Tx) error {
		if err := checkSchema(tx); err != nil {
			return err
		}
		// A file from before the kept bucket existed gets it added.
		fresh = tx.Bucket(aliasesBucket) == nil || tx.Bucket(keptBucket) == nil
		if tx.Bucket(aliasesBucket) == nil {
			return nil
		}
		skipped, err = loadTx(tx, ix)
		return err
	})
	if err == nil && fresh {
		err = db.Update(initSchema)
	}
	if err != nil {
		closeQuietly(db)
		return nil, nil, nil, err
	}
	return db, ix, skipped, nil
}

// closeQuietly closes a database that is being given up on; a damaged one
// may panic even here.
func closeQuietly(db *bolt.DB) {
	defer func() { _ = recover() }()
	_ = db.Close()
}

// moveAside renames a damaged file to path.damaged-<UTC time>, keeping it
// for inspection, and returns the new name.
func moveAside(path string) (string, error) {
	moved := path + ".damaged-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(path, moved); err != nil {
		return "", err
	}
	return moved, nil
}

// writable checks that the state directory and the file can be created and
// written, without bbolt: bbolt would report a read-only directory as
// an error no different from a damaged file.
func writable(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// readOnly loads what it can from a file that cannot be written: nothing
// if it does not exist or is damaged.
func readOnly(path string, log logrus.FieldLogger) (ix *index) {
	ix = newIndex()
	if _, err := os.Stat(path); err != nil {
		return ix
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			log.WithField("error", fmt.Sprint(r)).Error("alias database is damaged and cannot be moved aside: starting with an empty table")
			ix = newIndex()
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: DefaultLockTimeout})
	if err != nil {
		log.WithError(err).Error("cannot read the alias database: starting with an empty table")
		return ix
	}
	defer closeQuietly(db)
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(aliasesBucket) == nil {
			return nil
		}
		if err := checkSchema(tx); err != nil {
			return err
		}
		_, err := loadTx(tx, ix)
		return err
	}); err != nil {
		log.WithError(err).Error("cannot read the alias database: starting with an empty table")
		return newIndex()
	}
	return ix
}
