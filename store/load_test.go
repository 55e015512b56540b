package store

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	bolt "go.etcd.io/bbolt"
)

// seed writes raw key/values into a new file the way an older or damaged
// process might have left it.
func seed(t testing.TB, path string, schema string, kv map[string]string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		if schema != "" {
			meta, err := tx.CreateBucketIfNotExists(metaBucket)
			if err != nil {
				return err
			}
			if err := meta.Put(schemaKey, []byte(schema)); err != nil {
				return err
			}
		}
		b, err := tx.CreateBucketIfNotExists(aliasesBucket)
		if err != nil {
			return err
		}
		for k, v := range kv {
			if err := b.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenSkipsUndecodableEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases.db")
	seed(t, path, "", map[string]string{
		"good:1":     `{"name":"good:1","image_id":"sha256:1","mirror":"m/good:1","created":"2026-01-02T03:04:05Z"}`,
		"notjson:1":  `{"name":`,
		"wrongkey:1": `{"name":"other:1","image_id":"sha256:1","created":"2026-01-02T03:04:05Z"}`,
		"noimage:1":  `{"name":"noimage:1","created":"2026-01-02T03:04:05Z"}`,
	})

	logger, hook := logtest.NewNullLogger()
	s, err := Open(path, WithLogger(logger))
	if err != nil {
		t.Fatalf("Open with undecodable entries: %v", err)
	}
	equalNames(t, "List", s.List(), "good:1")

	skipped := map[string]bool{}
	for _, e := range hook.AllEntries() {
		if e.Level != logrus.WarnLevel {
			t.Errorf("log level %v, want warning", e.Level)
		}
		skipped[e.Data["alias"].(string)] = true
		if e.Data["path"] != path {
			t.Errorf("warning does not name the path: %v", e.Data)
		}
	}
	for _, k := range []string{"notjson:1", "wrongkey:1", "noimage:1"} {
		if !skipped[k] {
			t.Errorf("no warning for %s (got %v)", k, skipped)
		}
	}

	// Deleting a skipped name clears it from the file; a Put overwrites one.
	if err := s.Delete("notjson:1"); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, alias("noimage:1", "sha256:2", ""))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	hook.Reset()
	s2, err := Open(path, WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	equalNames(t, "List after repair", s2.List(), "good:1", "noimage:1")
	if n := len(hook.AllEntries()); n != 1 {
		t.Errorf("%d warnings after repair, want 1 (wrongkey:1)", n)
	}
}

func TestOpenAdoptsFileWithoutSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases.db")
	seed(t, path, "", nil)
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestOpenRejectsNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases.db")
	seed(t, path, "2", nil)
	_, err := Open(path)
	if err == nil {
		t.Fatal("Open of a schema 2 file succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"2"`) {
		t.Errorf("error %q should name the path and the version", err)
	}
	if errors.Is(err, ErrLocked) {
		t.Errorf("schema error reported as a lock: %v", err)
	}
	// The failed Open must have released the file.
	seed(t, path, "", nil)
}
