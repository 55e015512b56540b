package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTemp(t testing.TB, opts ...Option) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "aliases.db")
	s, err := Open(path, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func alias(name, id, mirror string) Alias {
	return Alias{
		Name:    name,
		ImageID: id,
		Mirror:  mirror,
		Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

func mustPut(t testing.TB, s *Store, as ...Alias) {
	t.Helper()
	for _, a := range as {
		if err := s.Put(a); err != nil {
			t.Fatalf("Put(%s): %v", a.Name, err)
		}
	}
}

func names(as []Alias) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Name
	}
	return out
}

func equalNames(t *testing.T, what string, got []Alias, want ...string) {
	t.Helper()
	if g := names(got); !slicesEqual(g, want) {
		t.Errorf("%s = %q, want %q", what, g, want)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func TestPutGetListDelete(t *testing.T) {
	s, _ := openTemp(t)
	a := alias("gcr.io/x/y:t", "sha256:aaa", "127.0.0.1:5000/mirror/gcr.io/x/y:t")
	b := alias("docker.io/library/busybox:latest", "sha256:bbb", "127.0.0.1:5000/mirror/docker.io/library/busybox:latest")
	mustPut(t, s, a, b)

	got, ok := s.Get(a.Name)
	if !ok || !reflect.DeepEqual(got, a) {
		t.Fatalf("Get = %+v, %v; want %+v", got, ok, a)
	}
	if _, ok := s.Get("gcr.io/x/y:other"); ok {
		t.Error("Get of an unknown name succeeded")
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d, want 2", s.Len())
	}
	equalNames(t, "List", s.List(), b.Name, a.Name)

	if err := s.Delete(a.Name, "never/was:there"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, ok := s.Get(a.Name); ok {
		t.Error("deleted alias still present")
	}
	equalNames(t, "List after Delete", s.List(), b.Name)
	if err := s.Delete(); err != nil {
		t.Errorf("Delete(): %v", err)
	}
}

func TestListIsACopy(t *testing.T) {
	s, _ := openTemp(t)
	mustPut(t, s, alias("a:1", "sha256:1", "m/a:1"))
	l := s.List()
	l[0].ImageID = "changed"
	if got, _ := s.Get("a:1"); got.ImageID != "sha256:1" {
		t.Errorf("mutating List's result changed the store: %+v", got)
	}
}

func TestByImageByMirror(t *testing.T) {
	s, _ := openTemp(t)
	mustPut(t, s,
		alias("reg/b:1", "sha256:one", "m/reg/b:1"),
		alias("reg/a:1", "sha256:one", "m/reg/a:1"),
		alias("reg/c@sha256:ccc", "sha256:two", "m/reg/a:1"),
	)
	equalNames(t, "ByImage(one)", s.ByImage("sha256:one"), "reg/a:1", "reg/b:1")
	equalNames(t, "ByImage(two)", s.ByImage("sha256:two"), "reg/c@sha256:ccc")
	equalNames(t, "ByImage(unknown)", s.ByImage("sha256:none"))
	equalNames(t, "ByMirror(m/reg/a:1)", s.ByMirror("m/reg/a:1"), "reg/a:1", "reg/c@sha256:ccc")
	equalNames(t, "ByMirror(unknown)", s.ByMirror("m/none"))
}

func TestPutReplaceChangesImage(t *testing.T) {
	s, path := openTemp(t)
	mustPut(t, s, alias("reg/a:t", "sha256:old", "m1/reg/a:t"))
	mustPut(t, s, alias("reg/a:t", "sha256:new", "m2/reg/a:t"))

	check := func(s *Store) {
		t.Helper()
		if got, _ := s.Get("reg/a:t"); got.ImageID != "sha256:new" || got.Mirror != "m2/reg/a:t" {
			t.Errorf("Get = %+v, want the replacement", got)
		}
		equalNames(t, "ByImage(old)", s.ByImage("sha256:old"))
		equalNames(t, "ByImage(new)", s.ByImage("sha256:new"), "reg/a:t")
		equalNames(t, "ByMirror(m1)", s.ByMirror("m1/reg/a:t"))
		equalNames(t, "ByMirror(m2)", s.ByMirror("m2/reg/a:t"), "reg/a:t")
		if s.Len() != 1 {
			t.Errorf("Len = %d, want 1", s.Len())
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
}

func TestPutSameTargetKeepsCreated(t *testing.T) {
	changes := 0
	s, _ := openTemp(t, WithOnChange(func(int) { changes++ }))
	first := alias("reg/a:t", "sha256:a", "m/reg/a:t")
	mustPut(t, s, first)
	again := first
	again.Created = first.Created.Add(time.Hour)
	mustPut(t, s, again)

	if got, _ := s.Get(first.Name); !got.Created.Equal(first.Created) {
		t.Errorf("Created = %v, want the first one %v", got.Created, first.Created)
	}
	if changes != 2 { // once at Open, once for the first Put
		t.Errorf("onChange called %d times, want 2", changes)
	}
}

func TestPutFillsCreated(t *testing.T) {
	s, _ := openTemp(t)
	before := time.Now()
	mustPut(t, s, Alias{Name: "reg/a:t", ImageID: "sha256:a"})
	got, _ := s.Get("reg/a:t")
	if got.Created.Before(before.Add(-time.Second)) || got.Created.After(time.Now().Add(time.Second)) {
		t.Errorf("Created = %v, want about now", got.Created)
	}
}

func TestPutValidates(t *testing.T) {
	s, _ := openTemp(t)
	for _, a := range []Alias{
		{ImageID: "sha256:a"},
		{Name: "reg/a:t"},
	} {
		if err := s.Put(a); err == nil {
			t.Errorf("Put(%+v) succeeded, want an error", a)
		}
	}
	if s.Len() != 0 {
		t.Errorf("Len = %d after rejected puts", s.Len())
	}
}

func TestPersistence(t *testing.T) {
	s, path := openTemp(t)
	want := []Alias{
		alias("a/b:1", "sha256:1", "m/a/b:1"),
		alias("a/b@sha256:0123", "sha256:2", ""),
		alias("c/d:2", "sha256:1", "m/c/d:2"),
	}
	mustPut(t, s, want...)
	mustPut(t, s, alias("gone:1", "sha256:9", "m/gone:1"))
	if err := s.Delete("gone:1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var counts []int
	s2, err := Open(path, WithOnChange(func(n int) { counts = append(counts, n) }))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.List(); !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen List =\n%+v\nwant\n%+v", got, want)
	}
	equalNames(t, "ByImage after reopen", s2.ByImage("sha256:1"), "a/b:1", "c/d:2")
	if !reflect.DeepEqual(counts, []int{3}) {
		t.Errorf("onChange at Open = %v, want [3]", counts)
	}
}

func TestOpenCreatesPrivateDirAndFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "nested", "aliases.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Path() != path {
		t.Errorf("Path = %q, want %q", s.Path(), path)
	}
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask can only remove bits, never add them.
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s mode = %v, want at most %v", p, got, want)
		}
	}
}

func TestOpenLockedFailsFast(t *testing.T) {
	_, path := openTemp(t)
	start := time.Now()
	s2, err := Open(path, WithLockTimeout(100*time.Millisecond))
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a locked file succeeded")
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("second Open took %v, want it to give up quickly", elapsed)
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %v does not wrap ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}

func TestDeleteImage(t *testing.T) {
	var last int
	s, _ := openTemp(t, WithOnChange(func(n int) { last = n }))
	mustPut(t, s,
		alias("r/b:1", "sha256:x", "m/r/b:1"),
		alias("r/a:1", "sha256:x", "m/r/a:1"),
		alias("r/c:1", "sha256:y", "m/r/c:1"),
	)
	got, err := s.DeleteImage("sha256:x")
	if err != nil {
		t.Fatal(err)
	}
	equalNames(t, "DeleteImage result", got, "r/a:1", "r/b:1")
	equalNames(t, "List after DeleteImage", s.List(), "r/c:1")
	equalNames(t, "ByMirror of a deleted alias", s.ByMirror("m/r/a:1"))
	if last != 1 {
		t.Errorf("onChange last reported %d, want 1", last)
	}
	got, err = s.DeleteImage("sha256:x")
	if err != nil || len(got) != 0 {
		t.Errorf("second DeleteImage = %v, %v; want nothing", got, err)
	}
}

func TestOnChangeCounts(t *testing.T) {
	var counts []int
	s, _ := openTemp(t, WithOnChange(func(n int) { counts = append(counts, n) }))
	mustPut(t, s, alias("a:1", "sha256:1", ""), alias("b:1", "sha256:1", ""))
	if err := s.Delete("a:1", "missing:1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("missing:2"); err != nil { // changes nothing: no report
		t.Fatal(err)
	}
	if _, err := s.DeleteImage("sha256:1"); err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 2, 1, 0}; !reflect.DeepEqual(counts, want) {
		t.Errorf("onChange calls = %v, want %v", counts, want)
	}
}

func TestClosed(t *testing.T) {
	s, _ := openTemp(t)
	mustPut(t, s, alias("a:1", "sha256:1", ""))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Put(alias("b:1", "sha256:2", "")); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	if err := s.Delete("a:1"); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close = %v, want ErrClosed", err)
	}
	if _, err := s.DeleteImage("sha256:1"); !errors.Is(err, ErrClosed) {
		t.Errorf("DeleteImage after Close = %v, want ErrClosed", err)
	}
	if _, ok := s.Get("a:1"); !ok {
		t.Error("reads after Close should still answer from memory")
	}
}

// A commit that fails must leave memory exactly as it was.
func TestFailedCommitLeavesMemoryUntouched(t *testing.T) {
	s, _ := openTemp(t)
	a := alias("a:1", "sha256:1", "m/a:1")
	mustPut(t, s, a)
	// Close bbolt underneath the store so every transaction fails.
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}

	if err := s.Put(alias("a:1", "sha256:2", "m2/a:1")); err == nil {
		t.Error("Put on a closed bbolt succeeded")
	}
	if err := s.Put(alias("b:1", "sha256:2", "")); err == nil {
		t.Error("Put on a closed bbolt succeeded")
	}
	if err := s.Delete("a:1"); err == nil {
		t.Error("Delete on a closed bbolt succeeded")
	}
	if _, err := s.DeleteImage("sha256:1"); err == nil {
		t.Error("DeleteImage on a closed bbolt succeeded")
	}
	if got := s.List(); !reflect.DeepEqual(got, []Alias{a}) {
		t.Errorf("List = %+v, want only the original", got)
	}
	equalNames(t, "ByImage(1)", s.ByImage("sha256:1"), "a:1")
	equalNames(t, "ByImage(2)", s.ByImage("sha256:2"))
}

func TestConcurrentPutGet(t *testing.T) {
	s, _ := openTemp(t)
	const writers, perWriter = 4, 25
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.Get("w0/img:0")
				s.ByImage("sha256:0")
				s.ByMirror("m/w1/img:1")
				s.List()
				s.Len()
			}
		}()
	}
	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := range perWriter {
				name := fmt.Sprintf("w%d/img:%d", w, i)
				if err := s.Put(alias(name, fmt.Sprintf("sha256:%d", i%3), "m/"+name)); err != nil {
					t.Error(err)
					return
				}
				if i%5 == 0 {
					if err := s.Delete(name); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wwg.Wait()
	close(stop)
	wg.Wait()

	want := writers * (perWriter - perWriter/5)
	if s.Len() != want || len(s.List()) != want {
		t.Errorf("Len = %d, List has %d, want %d", s.Len(), len(s.List()), want)
	}
}

func TestByRepository(t *testing.T) {
	s, _ := openTemp(t)
	mustPut(t, s,
		alias("gcr.io/x/y:t", "sha256:1", "m/gcr.io/x/y:t"),
		alias("gcr.io/x/y:u", "sha256:2", "m/gcr.io/x/y:u"),
		alias("gcr.io/x/y@sha256:"+strings.Repeat("a", 64), "sha256:3", "m/gcr.io/x/y@sha256:"+strings.Repeat("a", 64)),
		alias("gcr.io/x/yz:t", "sha256:4", "m/gcr.io/x/yz:t"),
		alias("localhost:5000/x/y:t", "sha256:5", "m/x/y:t"),
	)
	equalNames(t, "ByRepository(gcr.io/x/y)", s.ByRepository("gcr.io/x/y"),
		"gcr.io/x/y:t", "gcr.io/x/y:u", "gcr.io/x/y@sha256:"+strings.Repeat("a", 64))
	equalNames(t, "ByRepository(localhost:5000/x/y)", s.ByRepository("localhost:5000/x/y"), "localhost:5000/x/y:t")
	if err := s.Delete("gcr.io/x/y:t"); err != nil {
		t.Fatal(err)
	}
	equalNames(t, "after delete", s.ByRepository("gcr.io/x/y"), "gcr.io/x/y:u", "gcr.io/x/y@sha256:"+strings.Repeat("a", 64))
	if got := s.ByRepository("gcr.io/x"); len(got) != 0 {
		t.Errorf("ByRepository(gcr.io/x) = %v", got)
	}
}

func TestRestoreKeepsExisting(t *testing.T) {
	var last int
	s, path := openTemp(t, WithOnChange(func(n int) { last = n }))
	mustPut(t, s, alias("a:1", "sha256:new", "m/a:1"))
	n, err := s.Restore([]Alias{
		alias("a:1", "sha256:old", "m/a:1"), // recorded meanwhile by a pull: kept
		alias("b:1", "sha256:2", "m/b:1"),
		alias("b:1", "sha256:3", "m/b:1"), // a second one for the same name: the first wins
		{Name: "c:1", ImageID: "sha256:2", Mirror: "m/c:1"},
	})
	if err != nil || n != 2 {
		t.Fatalf("Restore = %d, %v; want 2 added", n, err)
	}
	if a, _ := s.Get("a:1"); a.ImageID != "sha256:new" {
		t.Errorf("Restore overwrote a:1 with %s", a.ImageID)
	}
	if c, _ := s.Get("c:1"); c.Created.IsZero() {
		t.Error("Restore left Created zero")
	}
	if last != 3 {
		t.Errorf("onChange last reported %d, want 3", last)
	}
	ids := s.ImageIDs()
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"sha256:2", "sha256:new"}) {
		t.Errorf("ImageIDs = %q", ids)
	}
	if _, err := s.Restore([]Alias{{Name: "d:1"}}); err == nil {
		t.Error("Restore of an alias without an image id succeeded")
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	equalNames(t, "List after reopen", s2.List(), "a:1", "b:1", "c:1")
}

// containerd reports ids as "sha256:<hex>", CRI-O as the bare hex; either
// form finds the aliases recorded with the other.
func TestImageIDWithOrWithoutPrefix(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	s, _ := openTemp(t)
	mustPut(t, s,
		alias("reg/a:1", hex, "m/reg/a:1"),
		alias("reg/b:1", "sha256:"+hex, "m/reg/b:1"),
	)
	for _, id := range []string{hex, "sha256:" + hex} {
		equalNames(t, "ByImage("+id+")", s.ByImage(id), "reg/a:1", "reg/b:1")
	}
	if ids := s.ImageIDs(); len(ids) != 1 || IDKey(ids[0]) != hex {
		t.Errorf("ImageIDs = %q, want the one image once", ids)
	}
	got, err := s.DeleteImage(hex)
	if err != nil {
		t.Fatal(err)
	}
	equalNames(t, "DeleteImage(bare hex)", got, "reg/a:1", "reg/b:1")
	equalNames(t, "List after DeleteImage", s.List())
}

func TestKeepName(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases.db")
	seed(t, path, "1", nil) // a file from before kept names existed
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, alias("o/a:1", "sha256:1", "m/o/a:1"))
	if err := s.KeepName("m/o/a:1", "sha256:1"); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepName("m/o/b:1", "sha256:2"); err != nil {
		t.Fatal(err)
	}
	if !s.Kept("m/o/a:1", "sha256:1") || s.Kept("m/o/a:1", "sha256:2") || s.Kept("o/a:1", "sha256:1") {
		t.Error("Kept answers wrong")
	}
	ids := s.ImageIDs()
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"sha256:1", "sha256:2"}) {
		t.Errorf("ImageIDs = %q, want the kept name's image too", ids)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Kept("m/o/a:1", "sha256:1") || !s.Kept("m/o/b:1", "sha256:2") {
		t.Error("kept names lost on reopen")
	}
	// Removing the image forgets its kept names with its aliases.
	if _, err := s.DeleteImage("sha256:2"); err != nil {
		t.Fatal(err)
	}
	if s.Kept("m/o/b:1", "sha256:2") || !s.Kept("m/o/a:1", "sha256:1") {
		t.Error("DeleteImage did not forget exactly the kept names of its image")
	}
}
