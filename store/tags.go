package store

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tag records remember, per original tag reference, the digest the proxy
// last pulled for it under a tag check (trust on first use): the digest the
// source confirmed, or the mirror's answer when the source could not be
// asked. They live in the "tags" bucket, beside the aliases, and are bounded
// by MaxTagRecords: beyond it the least recently seen record goes.

// MaxTagRecords bounds the tag records (WithMaxTagRecords): a node pulls a few hundred distinct
// tags, so a record is evicted only after thousands of others were seen
// since.
const MaxTagRecords = 10000

// TagRecord is the digest last seen for one tag reference, and when.
type TagRecord struct {
	Digest string    `json:"digest"`
	Seen   time.Time `json:"seen"`
}

// Tag returns the record of tag reference name.
func (s *Store) Tag(name string) (TagRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.ix.tags[name]
	return r, ok
}

// TagCount returns the number of tag records.
func (s *Store) TagCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ix.tags)
}

// tagSeenRefresh is how old a record's Seen may get before the same digest
// seen again is written: a pull of an unchanged tag then costs no write
// (a bbolt commit is an fsync, milliseconds), and eviction by Seen is still
// exact to within this.
const tagSeenRefresh = time.Hour

// PutTag records digest as the one seen for tag reference name now, and
// evicts the least recently seen record when the bound is reached. The same
// digest seen again within tagSeenRefresh is not written.
func (s *Store) PutTag(name, digest string) error {
	if name == "" || digest == "" {
		return fmt.Errorf("tag record %q without a digest", name)
	}
	now := time.Now().UTC()
	rec := TagRecord{Digest: digest, Seen: now}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if old, ok := s.Tag(name); ok && old.Digest == digest && now.Sub(old.Seen) < tagSeenRefresh {
		return nil
	}
	var evict string
	if _, ok := s.ix.tags[name]; !ok && len(s.ix.tags) >= s.maxTags {
		evict = oldestTag(s.ix.tags)
	}
	err = s.commitTags(func(b *bolt.Bucket) error {
		if evict != "" {
			if err := b.Delete([]byte(evict)); err != nil {
				return err
			}
		}
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return fmt.Errorf("record tag %s in %s: %w", name, s.path, err)
	}
	s.mu.Lock()
	if evict != "" {
		delete(s.ix.tags, evict)
	}
	s.ix.tags[name] = rec
	s.mu.Unlock()
	return nil
}

// oldestTag returns the name of the least recently seen record.
func oldestTag(tags map[string]TagRecord) string {
	var name string
	var seen time.Time
	for n, r := range tags {
		if name == "" || r.Seen.Before(seen) || (r.Seen.Equal(seen) && n < name) {
			name, seen = n, r.Seen
		}
	}
	return name
}

// loadTags reads the tags bucket into ix; undecodable records are skipped
// (the next pull of the tag records it again).
func loadTags(tx *bolt.Tx, ix *index) {
	b := tx.Bucket(tagsBucket)
	if b == nil {
		return
	}
	_ = b.ForEach(func(k, v []byte) error {
		var r TagRecord
		if json.Unmarshal(v, &r) == nil && r.Digest != "" && len(k) > 0 {
			ix.tags[string(k)] = r
		}
		return nil
	})
}

func (s *Store) commitTags(fn func(b *bolt.Bucket) error) error {
	if s.volatile {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(tagsBucket)
		if err != nil {
			return err
		}
		return fn(b)
	})
}
