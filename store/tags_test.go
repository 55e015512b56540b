package store

import (
	"path/filepath"
	"testing"
)

func TestTagRecordsSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Tag("source.test/app:v1"); ok {
		t.Fatal("a new store has a tag record")
	}
	for _, d := range []string{"sha256:aaaa", "sha256:bbbb"} {
		if err := s.PutTag("source.test/app:v1", d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutTag("", "sha256:aaaa"); err == nil {
		t.Error("PutTag with an empty name succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, ok := s.Tag("source.test/app:v1")
	if !ok || r.Digest != "sha256:bbbb" || r.Seen.IsZero() {
		t.Errorf("after reopen: record %+v (found %v), want the last digest sha256:bbbb with a time", r, ok)
	}
	if s.Len() != 0 {
		t.Errorf("tag records count as aliases: Len() = %d", s.Len())
	}
}

func TestTagRecordsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases.db")
	s, err := Open(path, WithMaxTagRecords(3))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		if err := s.PutTag("r.test/"+n+":v1", "sha256:"+n); err != nil {
			t.Fatal(err)
		}
	}
	// Seeing "a" again makes "b" the least recently seen.
	if err := s.PutTag("r.test/a:v1", "sha256:a2"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag("r.test/d:v1", "sha256:d"); err != nil {
		t.Fatal(err)
	}
	if n := s.TagCount(); n != 3 {
		t.Errorf("TagCount() = %d, want the bound 3", n)
	}
	if _, ok := s.Tag("r.test/b:v1"); ok {
		t.Error("the least recently seen record b was kept beyond the bound")
	}
	s.Close()
	s, err = Open(path, WithMaxTagRecords(3))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, n := range []string{"a", "c", "d"} {
		if _, ok := s.Tag("r.test/" + n + ":v1"); !ok {
			t.Errorf("record %s lost after reopen", n)
		}
	}
	if _, ok := s.Tag("r.test/b:v1"); ok {
		t.Error("the evicted record b is back after reopen: it was not deleted on disk")
	}
}

// TestTagRecordSameDigestNotRewritten: a tag seen again with the digest it
// has is not written again within tagSeenRefresh (each write is a commit,
// an fsync on the pull path); another digest is.
func TestTagRecordSameDigestNotRewritten(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "aliases.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const name = "source.test/app:v1"
	if err := s.PutTag(name, "sha256:aaaa"); err != nil {
		t.Fatal(err)
	}
	first, _ := s.Tag(name)
	if err := s.PutTag(name, "sha256:aaaa"); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Tag(name); !again.Seen.Equal(first.Seen) {
		t.Errorf("the same digest was written again: seen %v, then %v", first.Seen, again.Seen)
	}
	if err := s.PutTag(name, "sha256:bbbb"); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Tag(name); r.Digest != "sha256:bbbb" {
		t.Errorf("record %+v, want the new digest sha256:bbbb", r)
	}
}
