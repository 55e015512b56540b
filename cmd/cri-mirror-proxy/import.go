package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver/mirrorsets"
)

const importHelp = `Usage: cri-mirror-proxy import [flags] FILE...

Convert OpenShift ImageTagMirrorSet, ImageDigestMirrorSet and
ImageContentSourcePolicy objects into a registries.conf drop-in, merged the
way the machine-config-operator merges them on a node. A FILE holds YAML or
JSON: several documents, or a List with items; "-" reads standard input.
Objects of other kinds are ignored with a note. The result is checked with
the same rules as check-config before it is written.

Example:
  oc get imagetagmirrorsets,imagedigestmirrorsets -o yaml |
    cri-mirror-proxy import --output /etc/containers/registries.conf.d/50-openshift-mirrors.conf -
  systemctl reload cri-mirror-proxy

Flags:
`

// importConfig holds the settings of the import command.
type importConfig struct {
	files  []string
	output string    // "" writes to stdout
	stdin  io.Reader // read for the FILE "-"
	stderr io.Writer // notes about the conversion
}

func parseImport(args []string, stdout, stderr io.Writer) (importConfig, error) {
	c := importConfig{stdin: os.Stdin, stderr: stderr}
	f := newFlags("import", "import [flags] FILE...", stdout, stderr)
	f.intro = importHelp
	f.argName = "FILE"
	f.String(&c.output, "output", "", "write the drop-in to this file (atomically, mode 0644) instead of standard output; in a drop-in directory it must end in .conf")
	if err := f.parse(args, 1, -1); err != nil {
		return c, err
	}
	c.files = f.args
	return c, nil
}

// runImport reads every file, reports all invalid objects at once, merges
// the rest and writes the drop-in.
func runImport(c importConfig, stdout io.Writer) error {
	stderr := c.stderr
	if stderr == nil {
		stderr = io.Discard
	}
	var objs []mirrorsets.Object
	var errs []error
	stdinRead := false
	for _, file := range c.files {
		name, data, err := c.read(file, &stdinRead)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		o, err := mirrorsets.Parse(name, data)
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("import: invalid input:\n%w", errors.Join(errs...))
	}
	cfg, err := mirrorsets.Merge(objs)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	data, err := cfg.TOML()
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if err := checkDropIn(data); err != nil {
		return fmt.Errorf("import: the generated rules are not accepted by the proxy: %w", err)
	}
	for _, n := range cfg.Notes {
		fmt.Fprintf(stderr, "cri-mirror-proxy import: note: %s\n", n)
	}
	if c.output == "" {
		_, err := stdout.Write(data)
		return err
	}
	if !strings.HasSuffix(c.output, ".conf") {
		fmt.Fprintf(stderr, "cri-mirror-proxy import: note: %s does not end in .conf: a registries.conf.d directory ignores it\n", c.output)
	}
	if err := writeFileAtomic(c.output, data, 0o644); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	return nil
}

// read returns a file's contents and the name to report it by.
func (c importConfig) read(file string, stdinRead *bool) (string, []byte, error) {
	if file != "-" {
		data, err := os.ReadFile(file)
		return file, data, err
	}
	if *stdinRead {
		return "", nil, errors.New("standard input (-) given more than once")
	}
	*stdinRead = true
	if c.stdin == nil {
		return "<stdin>", nil, nil
	}
	data, err := io.ReadAll(c.stdin)
	if err != nil {
		return "", nil, fmt.Errorf("read standard input: %w", err)
	}
	return "<stdin>", data, nil
}

// checkDropIn loads data as the only rules the proxy has, so that a file
// import writes is always one serve and check-config accept.
func checkDropIn(data []byte) error {
	dir, err := os.MkdirTemp("", "cri-mirror-proxy-import-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "registries.conf")
	dropIns := filepath.Join(dir, "registries.conf.d")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return err
	}
	if err := os.Mkdir(dropIns, 0o700); err != nil {
		return err
	}
	return resolver.Check(file, dropIns)
}

// writeFileAtomic replaces path with data: readers (the proxy reloading
// its drop-ins, CRI-O, Podman) see the old file or the new one, never a
// part. The temporary file does not end in .conf, so a drop-in directory
// scan skips it.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	// CreateTemp makes the file 0600; the runtime and tools reading
	// registries.conf.d need to read it.
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable; not every file system supports
	// syncing a directory, and the file is in place either way.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
