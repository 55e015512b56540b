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
