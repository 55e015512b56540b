package store

import (
	"fmt"
	"path/filepath"
	"testing"
)

// openSeeded opens a store holding n aliases. It seeds the file in one
// transaction, since n separate Puts would each pay an fsync.
func openSeeded(b *testing.B, n int) *Store {
	b.Helper()
	path := filepath.Join(b.TempDir(), "aliases.db")
	kv := make(map[string]string, n)
	for i := range n {
		v, err := encode(alias(benchName(i), fmt.Sprintf("sha256:%064d", i/2), "127.0.0.1:5000/mirror/"+benchName(i)))
		if err != nil {
			b.Fatal(err)
		}
		kv[benchName(i)] = string(v)
	}
	seed(b, path, "", kv)
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if s.Len() != n {
		b.Fatalf("Len = %d, want %d", s.Len(), n)
	}
	return s
}

func benchName(i int) string { return fmt.Sprintf("registry.example.com/team/app-%05d:v1", i) }

func BenchmarkGet(b *testing.B) {
	s := openSeeded(b, 5000)
	name := benchName(2500)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := s.Get(name); !ok {
				b.Fatal("missing")
			}
		}
	})
}

func BenchmarkList5000(b *testing.B) {
	s := openSeeded(b, 5000)
	b.ReportAllocs()
	for b.Loop() {
		if len(s.List()) != 5000 {
			b.Fatal("short list")
		}
	}
}

func BenchmarkByImage5000(b *testing.B) {
	s := openSeeded(b, 5000)
	id := fmt.Sprintf("sha256:%064d", 1000)
	b.ReportAllocs()
	for b.Loop() {
		if len(s.ByImage(id)) != 2 {
			b.Fatal("want 2 aliases")
		}
	}
}

// BenchmarkOpen5000 measures start-up: loading the table into memory.
func BenchmarkOpen5000(b *testing.B) {
	seeded := openSeeded(b, 5000)
	path := seeded.Path()
	if err := seeded.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
