package resolver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// ruleSet is one successfully loaded configuration. It is immutable once
// built, so Resolve can use it without locks.
type ruleSet struct {
	confPath    string
	mainMissing bool // confPath was defaulted and does not exist
	confDir     string
	dropIns     []string // drop-in files read, in the order they apply

	// sys is what containers/image loaded these rules with; its cache entry
	// for these paths holds them.
	sys types.SystemContext

	// registries as merged and validated by containers/image: one entry per
	// prefix, sorted by prefix.
	registries []sysregistriesv2.Registry
	// origin maps a prefix to the file whose [[registry]] is in effect.
	origin map[string]string

	// searchRegistries is unqualified-search-registries as merged by the
	// library; empty means a short name without alias gets docker.io.
	searchRegistries []string
	// shortNameModeKey is the file setting short-name-mode, "" if none: the
	// key is not used (see WithShortNameMode), check-config says so.
	shortNameModeKey string
	// credentialHelpersKey and layerStoreHelperKey name the last file
	// setting credential-helpers and additional-layer-store-auth-helper.
	credentialHelpersKey, layerStoreHelperKey string
}

// load reads and validates the main file and the drop-in directory.
//
// It makes two passes over the files. Ours comes first: a strict decode of
// each file on its own, so that syntax errors carry file and line, unknown
// keys (silently ignored by containers/image) are errors, and locations the
// runtime could never pull from are refused up front. Then containers/image
// loads, validates and merges the files exactly as CRI-O and Podman do; its
// errors already name the file. (The passes read the files separately: a
// file replaced in between escapes our checks until the next reload.)
//
// The containers/image cache entry for these paths is refreshed on success
// (other code in the process using the same SystemContext sees the new
// rules) and left alone on failure. We deliberately do not call
// InvalidateCache: TryUpdatingCache always reads the files and replaces the
// entry only on success, while InvalidateCache would drop every entry in the
// process, including ours when the new files turn out to be broken.
func load(confPath, confDir string, mainOptional bool) (*ruleSet, error) {
	rs := &ruleSet{confPath: confPath, confDir: confDir, origin: map[string]string{}}

	libraryMain := confPath
	if _, err := os.Stat(confPath); err != nil {
		if !mainOptional || !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("registries configuration: %w", err)
		}
		// containers/image errors out on a missing file given explicitly;
		// an empty file gives it the "no main file" of its default search
		// without letting it fall back to $HOME or /usr/share.
		rs.mainMissing = true
		libraryMain = os.DevNull
	}

	dropIns, err := dropInFiles(confDir)
	if err != nil {
		return nil, err
	}
	rs.dropIns = dropIns

	files := dropIns
	if !rs.mainMissing {
		files = append([]string{confPath}, dropIns...)
	}
	for _, file := range files {
		conf, err := decodeStrict(file)
		if err != nil {
			return nil, err
		}
		if err := validateRegistries(file, conf.Registries); err != nil {
			return nil, err
		}
		rs.recordOrigins(file, conf.Registries)
		if conf.ShortNameMode != "" {
			rs.shortNameModeKey = file
		}
		if len(conf.CredentialHelpers) > 0 {
			rs.credentialHelpersKey = file
		}
		if conf.AdditionalLayerStoreAuthHelper != "" {
			rs.layerStoreHelperKey = file
		}
	}

	// Both paths must be set: with only the main file the library still
	// reads the default drop-in directories, including ones under $HOME.
	rs.sys = types.SystemContext{
		SystemRegistriesConfPath:    libraryMain,
		SystemRegistriesConfDirPath: confDir,
	}
	// The returned value is marked deprecated for future fields, but its
	// Registries are the authoritative merged list (see parsedConfig in
	// system_registries_v2.go), and taking them from the same call that
	// validated them avoids a second, racy read through GetRegistries.
	merged, err := sysregistriesv2.TryUpdatingCache(&rs.sys)
	if err != nil {
		return nil, err
	}
	rs.registries = cloneRegistries(merged.Registries)
	rs.searchRegistries = slices.Clone(merged.UnqualifiedSearchRegistries)
	return rs, nil
}

// dropInFiles lists the *.conf files of dir the way containers/image does
// (go.podman.io/storage/pkg/configfile): non-directory entries, sorted by
// name; a missing directory has none.
func dropInFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("registries configuration drop-in directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	slices.Sort(files) // os.ReadDir sorts already; the order is the contract
	return files, nil
}

// recordOrigins notes which file defines each prefix, following the
// library's merge: prefix defaults to location, trailing slashes are
// trimmed, the first entry for a prefix within a file wins and a later file
// replaces an earlier one.
func (rs *ruleSet) recordOrigins(file string, regs []sysregistriesv2.Registry) {
	seen := map[string]bool{}
	for _, r := range regs {
		prefix := strings.TrimRight(r.Prefix, "/")
		if prefix == "" {
			prefix = strings.TrimRight(r.Location, "/")
		}
		if seen[prefix] {
			continue
		}
		seen[prefix] = true
		rs.origin[prefix] = file
	}
}

// cloneRegistries copies the slices shared with the library's cache so our
// snapshot cannot change under us.
func cloneRegistries(regs []sysregistriesv2.Registry) []sysregistriesv2.Registry {
	out := slices.Clone(regs)
	for i := range out {
		out[i].Mirrors = slices.Clone(out[i].Mirrors)
	}
	return out
}
