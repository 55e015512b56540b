package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// envPrefix names the environment variable of each flag:
// --runtime-endpoint ↔ CRI_MIRROR_PROXY_RUNTIME_ENDPOINT.
const envPrefix = "CRI_MIRROR_PROXY_"

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flags wraps a FlagSet so each flag is declared once with its name, its
// environment variable, its default and its help, side by side. The
// environment overrides the default; the command line overrides both.
type flags struct {
	fs  *flag.FlagSet
	err error
}

func newFlags(name, synopsis string, stderr io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cri-mirror-proxy %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return &flags{fs: fs}
}

func (f *flags) env(name string) (string, bool) {
	return os.LookupEnv(envName(name))
}

func (f *flags) help(name, usage string) string {
	return fmt.Sprintf("%s (env %s)", usage, envName(name))
}

func (f *flags) String(p *string, name, def, usage string) {
	if v, ok := f.env(name); ok {
		def = v
	}
	f.fs.StringVar(p, name, def, f.help(name, usage))
}

func (f *flags) Bool(p *bool, name string, def bool, usage string) {
	if v, ok := f.env(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.fail(fmt.Errorf("%s: %q is not true or false", envName(name), v))
		} else {
			def = b
		}
	}
	f.fs.BoolVar(p, name, def, f.help(name, usage))
}

func (f *flags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	if v, ok := f.env(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.fail(fmt.Errorf("%s: %w", envName(name), err))
		} else {
			def = d
		}
	}
	f.fs.DurationVar(p, name, def, f.help(name, usage))
}

func (f *flags) Mode(p *uint64, name string, def uint64, usage string) {
	if v, ok := f.env(name); ok {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil {
			f.fail(fmt.Errorf("%s: %q is not an octal file mode", envName(name), v))
		} else {
			def = m
		}
	}
	f.fs.Func(name, f.help(name, usage)+fmt.Sprintf(" (default %04o)", def), func(s string) error {
		m, err := strconv.ParseUint(s, 8, 32)
		if err != nil || m > 0o777 {
			return fmt.Errorf("%q is not an octal file mode such as 0660", s)
		}
		*p = m
		return nil
	})
	*p = def
}

func (f *flags) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

// parse parses args and wants exactly nargs positional arguments.
func (f *flags) parse(args []string, nargs int) error {
	if f.err != nil {
		return &exitError{code: 2, err: f.err}
	}
	if err := f.fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if f.fs.NArg() != nargs {
		f.fs.Usage()
		return &exitError{code: 2, err: fmt.Errorf("%s: want %d argument(s), got %d", f.fs.Name(), nargs, f.fs.NArg())}
	}
	return nil
}
