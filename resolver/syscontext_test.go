package resolver

import (
	"os"
	"testing"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
)

// TestSystemContextFollowsReload: code that contacts a candidate through
// containers/image (the manifest probe) starts from Resolution.SystemContext
// and looks the contacted host up in the library's process-wide cache, as the
// docker transport does. A reload that creates or removes the optional main
// file must reach that lookup.
func TestSystemContextFollowsReload(t *testing.T) {
	confPath, confDir := confFiles(t, "", map[string]string{"hub.conf": dockerMirrorConf})
	if err := os.Remove(confPath); err != nil {
		t.Fatal(err)
	}
	// As New builds it for the defaulted main file, at a path of the test's.
	r := &Resolver{confPath: confPath, confDir: confDir, mainOptional: true}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	const blockMirror = "[[registry]]\nlocation = \"mirror-a.local\"\nblocked = true\n"

	mirrorBlocked := func(stage string) bool {
		t.Helper()
		res, err := r.Resolve("nginx")
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		sys := res.SystemContext()
		if sys.SystemRegistriesConfDirPath != confDir {
			t.Errorf("%s: drop-in dir = %q, want %q (never the default directories)", stage, sys.SystemRegistriesConfDirPath, confDir)
		}
		reg, err := sysregistriesv2.FindRegistry(sys, "mirror-a.local/hub/library/nginx")
		if err != nil {
			t.Fatalf("%s: FindRegistry: %v", stage, err)
		}
		return reg != nil && reg.Blocked
	}

	if mirrorBlocked("no main file") {
		t.Fatal("no main file: nothing blocks the mirror")
	}
	writeFile(t, confPath, blockMirror)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if !mirrorBlocked("main file created") {
		t.Error("after a reload that created the main file, the library's lookup does not see it")
	}
	if err := os.Remove(confPath); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if mirrorBlocked("main file removed") {
		t.Error("after a reload that removed the main file, the library's lookup still sees it")
	}

	// A resolution made before a reload keeps the context it was made with.
	old, err := r.Resolve("nginx")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, confPath, blockMirror)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := old.SystemContext().SystemRegistriesConfPath; got != os.DevNull {
		t.Errorf("an earlier resolution's main file = %q, want %q", got, os.DevNull)
	}
	if got := old.SystemContext(); got == old.SystemContext() {
		t.Error("SystemContext must return a new value each call: callers set fields on it")
	}
}
