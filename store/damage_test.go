package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// seededFile writes a database of n aliases, large enough to span many pages,
// and returns its path.
func seededFile(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "aliases.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("registry.example.com/team/app-%05d:v1", i)
		v, err := encode(alias(name, fmt.Sprintf("sha256:%064d", i), "127.0.0.1:5000/mirror/"+name))
		if err != nil {
			t.Fatal(err)
		}
		kv[name] = string(v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seed(t, path, "", kv)
	return path
}

// damage functions do to a file what a torn write or a lost tail does.
var damages = []struct {
	name string
	do   func(t *testing.T, path string)
}{
	{"torn write over the data pages", func(t *testing.T, path string) {
		b := mustRead(t, path)
		// Pages 2 onwards (after the two meta pages) hold the freelist and
		// the tree; garble a stretch of them as a half-written page would.
		for i := 2 * os.Getpagesize(); i < len(b) && i < 40*os.Getpagesize(); i++ {
			b[i] = byte(i*7 + 3)
		}
		mustWrite(t, path, b)
	}},
	{"torn write inside the tree", func(t *testing.T, path string) {
		b := mustRead(t, path)
		// Leaf pages only: the meta pages and the freelist (at the end of
		// the data) are intact, so bbolt opens the file and meets the
		// garbage while reading the aliases.
		for i := 20 * os.Getpagesize(); i < 30*os.Getpagesize(); i++ {
			b[i] = byte(i*13 + 5)
		}
		mustWrite(t, path, b)
	}},
	{"truncated to a quarter", func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/4); err != nil {
			t.Fatal(err)
		}
	}},
	{"truncated to an eighth", func(t *testing.T, path string) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/8); err != nil {
			t.Fatal(err)
		}
	}},
	{"meta pages overwritten", func(t *testing.T, path string) {
		b := mustRead(t, path)
		copy(b, bytes.Repeat([]byte("garbage!"), 2*os.Getpagesize()/8))
		mustWrite(t, path, b)
	}},
	{"not a database at all", func(t *testing.T, path string) {
		mustWrite(t, path, []byte(strings.Repeat("not bolt", 1024)))
	}},
}

// TestOpenDamagedFile: a damaged file never crashes Open. It is moved aside
// unchanged, the store starts empty and works, and the move is logged as an
// error naming both files.
func TestOpenDamagedFile(t *testing.T) {
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			path := seededFile(t, 3000)
			d.do(t, path)
			damaged := mustRead(t, path)

			logger, hook := logtest.NewNullLogger()
			s, err := Open(path, WithLogger(logger))
			if err != nil {
				t.Fatalf("Open of a damaged file: %v", err)
			}
			defer s.Close()
			moved := s.MovedAside()
			if moved == "" || !strings.HasPrefix(moved, path+".damaged-") {
				t.Fatalf("MovedAside = %q, want %s.damaged-<time>", moved, path)
			}
			if got := mustRead(t, moved); !bytes.Equal(got, damaged) {
				t.Errorf("the file moved aside (%d bytes) is not the damaged file (%d bytes)", len(got), len(damaged))
			}
			if s.Len() != 0 || s.Volatile() {
				t.Errorf("after recovery Len = %d, Volatile = %v; want an empty, persistent table", s.Len(), s.Volatile())
			}
			logged := false
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.ErrorLevel && e.Data["path"] == path && e.Data["moved_to"] == moved {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no error logged naming %s and %s", path, moved)
			}

			// The new file works and persists.
			mustPut(t, s, alias("a:1", "sha256:1", "m/a:1"))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if s2.MovedAside() != "" {
				t.Errorf("the new file was moved aside too: %s", s2.MovedAside())
			}
			equalNames(t, "List after reopen", s2.List(), "a:1")
		})
	}
}

// TestOpenUnwritable: when the file cannot be created (here its directory is
// a regular file; in production a read-only state directory), Open still
// serves: the table lives in memory, and the reason is logged as an error.
func TestOpenUnwritable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "state")
	mustWrite(t, blocker, []byte("a file where the state directory should be"))
	path := filepath.Join(blocker, "aliases.db")

	var counts []int
	logger, hook := logtest.NewNullLogger()
	s, err := Open(path, WithLogger(logger), WithOnChange(func(n int) { counts = append(counts, n) }))
	if err != nil {
		t.Fatalf("Open with an unwritable state directory: %v", err)
	}
	if !s.Volatile() {
		t.Error("Volatile = false for a store that has no file")
	}
	if e := hook.LastEntry(); e == nil || e.Level != logrus.ErrorLevel || e.Data["path"] != path {
		t.Errorf("no error logged naming %s: %v", path, hook.AllEntries())
	}
	mustPut(t, s, alias("a:1", "sha256:1", "m/a:1"), alias("b:1", "sha256:1", "m/b:1"))
	if err := s.Delete("a:1"); err != nil {
		t.Fatal(err)
	}
	equalNames(t, "List", s.List(), "b:1")
	if want := []int{0, 1, 2, 1}; !slicesEqualInt(counts, want) {
		t.Errorf("onChange calls = %v, want %v", counts, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(alias("c:1", "sha256:1", "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
}

func slicesEqualInt(a, b []int) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
