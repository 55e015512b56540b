package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// envPrefix names the environment variable of each flag:
// --runtime-endpoint ↔ CRI_MIRROR_PROXY_RUNTIME_ENDPOINT.
const envPrefix = "CRI_MIRROR_PROXY_"

// defaultConfigFile holds the proxy's own settings, one key per flag name.
// It is optional at its default path.
const defaultConfigFile = "/etc/cri-mirror-proxy/config.toml"

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flags wraps a FlagSet so each flag is declared once with its name, its
// environment variable, its default and its help, side by side. Precedence:
// command line, then environment, then the config file, then the default.
type flags struct {
	fs       *flag.FlagSet
	err      error
	file     string            // config file read, "" if none
	settings map[string]string // its settings, by flag name
	origin   map[string]string // where a flag's value came from when not the command line

	args           []string // positional arguments, after parse
	argName        string   // what a positional argument is, for errors: IMAGE, FILE
	stdout, stderr io.Writer
	intro          string          // printed by usage before the flags
	hidden         map[string]bool // accepted (and read from the config file) but not listed in usage
	cliOnly        map[string]bool // command-line only: not a setting of the config file or environment
}

// newFlags makes the flag set of one command. Its --help goes to stdout and
// lists that command's flags only; a usage error goes to stderr.
func newFlags(name, synopsis string, stdout, stderr io.Writer) *flags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse prints help and errors itself
	return &flags{
		fs: fs, origin: map[string]string{}, stdout: stdout, stderr: stderr,
		intro:  fmt.Sprintf("Usage: cri-mirror-proxy %s\n\nFlags:\n", synopsis),
		hidden: map[string]bool{}, cliOnly: map[string]bool{},
	}
}

// hide keeps flags out of usage: settings a command accepts, so that it
// reads the same config file and environment as serve, but does not use.
func (f *flags) hide(names ...string) {
	for _, n := range names {
		f.hidden[n] = true
	}
}

// usage writes the command's synopsis and its visible flags to w.
func (f *flags) usage(w io.Writer) {
	fmt.Fprint(w, f.intro)
	visible := flag.NewFlagSet(f.fs.Name(), flag.ContinueOnError)
	visible.SetOutput(w)
	f.fs.VisitAll(func(fl *flag.Flag) {
		if !f.hidden[fl.Name] {
			visible.Var(fl.Value, fl.Name, fl.Usage)
			visible.Lookup(fl.Name).DefValue = fl.DefValue
		}
	})
	visible.PrintDefaults()
}

// Output declares -o, the output format of a command that prints a report:
// text (for people) or json (for programs). It is command-line only.
func (f *flags) Output(p *string) {
	*p = "text"
	f.fs.Var((*outputValue)(p), "o", "output `format`: text or json")
	f.cliOnly["o"] = true
}

type outputValue string

func (o *outputValue) String() string { return string(*o) }

func (o *outputValue) Set(s string) error {
	if s != "text" && s != "json" {
		return fmt.Errorf("%q is not text or json", s)
	}
	*o = outputValue(s)
	return nil
}

// loadConfig reads the config file named by --config in args, by its
// environment variable, or at the default path (where it may be missing).
// Values are TOML strings, booleans or integers keyed by flag name:
//
//	runtime-endpoint = "unix:///run/crio/crio.sock"
//	probe-timeout = "3s"
//	listen-mode = "0660"
func (f *flags) loadConfig(args []string) {
	f.fs.String("config", defaultConfigFile, f.help("config", "file of settings keyed by flag name (TOML)"))
	path, explicit := configArg(args)
	if !explicit {
		path, explicit = os.LookupEnv(envName("config"))
	}
	if !explicit {
		path = defaultConfigFile
	}
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return
		}
		f.fail(fmt.Errorf("config file %s: %w", path, err))
		return
	}
	f.file, f.settings = path, map[string]string{}
	for k, v := range raw {
		switch v := v.(type) {
		case string:
			f.settings[k] = v
		case bool, int64:
			f.settings[k] = fmt.Sprint(v)
		case map[string]any:
			if k != tagCheckKey {
				f.fail(fmt.Errorf("config file %s: %s: want a string, boolean or integer, got a table (only [%s] is a table)", path, k, tagCheckKey))
				continue
			}
			flat, err := flattenTagCheck(v)
			if err != nil {
				f.fail(fmt.Errorf("config file %s: [%s] %w", path, k, err))
				continue
			}
			f.settings[k] = flat
		default:
			f.fail(fmt.Errorf("config file %s: %s: want a string, boolean or integer, got %T", path, k, v))
		}
	}
}

// configArg finds --config's value on the command line.
func configArg(args []string) (string, bool) {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"-config", "--config"} {
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v, true
			}
			if a == p && i+1 < len(args) {
				return args[i+1], true
			}
		}
	}
	return "", false
}

// lookup finds a flag's value in the environment or the config file.
func (f *flags) lookup(name string) (value, source string, ok bool) {
	if v, ok := os.LookupEnv(envName(name)); ok {
		return v, envName(name), true
	}
	if v, ok := f.settings[name]; ok {
		return v, f.file, true
	}
	return "", "", false
}

func (f *flags) help(name, usage string) string {
	return fmt.Sprintf("%s (env %s)", usage, envName(name))
}

// preset turns a looked-up value into a flag's default with parse, and
// remembers where it came from.
func preset[T any](f *flags, name string, def T, parse func(string) (T, error)) T {
	v, source, ok := f.lookup(name)
	if !ok {
		return def
	}
	parsed, err := parse(v)
	if err != nil {
		f.fail(fmt.Errorf("%s: %s: %w", source, name, err))
		return def
	}
	f.origin[name] = source
	return parsed
}

func (f *flags) String(p *string, name, def, usage string) {
	def = preset(f, name, def, func(s string) (string, error) { return s, nil })
	f.fs.StringVar(p, name, def, f.help(name, usage))
}

func (f *flags) Bool(p *bool, name string, def bool, usage string) {
	def = preset(f, name, def, strconv.ParseBool)
	f.fs.BoolVar(p, name, def, f.help(name, usage))
}

func (f *flags) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	def = preset(f, name, def, time.ParseDuration)
	f.fs.DurationVar(p, name, def, f.help(name, usage))
}

// Count is a whole number, zero or more.
func (f *flags) Count(p *int, name string, def int, usage string) {
	*p = preset(f, name, def, parseCount)
	f.fs.Var((*countValue)(p), name, f.help(name, usage))
}

type countValue int

func (c *countValue) String() string { return strconv.Itoa(int(*c)) }

func (c *countValue) Set(s string) error {
	n, err := parseCount(s)
	*c = countValue(n)
	return err
}

func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a whole number, zero or more", s)
	}
	return n, nil
}

// Mode is an octal file mode such as 0660.
func (f *flags) Mode(p *uint64, name string, def uint64, usage string) {
	*p = preset(f, name, def, parseMode)
	f.fs.Var((*modeValue)(p), name, f.help(name, usage))
}

type modeValue uint64

func (m *modeValue) String() string { return fmt.Sprintf("%04o", uint64(*m)) }

func (m *modeValue) Set(s string) error {
	v, err := parseMode(s)
	*m = modeValue(v)
	return err
}

func parseMode(s string) (uint64, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode such as 0660", s)
	}
	if m&0o002 != 0 {
		return 0, fmt.Errorf("%q is world-writable: anyone on the node could drive the container runtime", s)
	}
	return m, nil
}

func (f *flags) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

// parse parses args, flags and positional arguments in any order (a "--"
// ends the flags), and wants between min and max positional arguments (max
// < 0: no limit). A config file setting that names no flag is an error: a
// typo must not pass. --help prints usage to stdout and returns
// flag.ErrHelp; bad input prints usage to stderr and returns exit code 2.
func (f *flags) parse(args []string, min, max int) error {
	if f.err != nil {
		return &exitError{code: 2, err: f.err}
	}
	keys := make([]string, 0, len(f.settings))
	for k := range f.settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || f.cliOnly[k] || f.fs.Lookup(k) == nil {
			return &exitError{code: 2, err: fmt.Errorf("config file %s: unknown setting %q (settings are the flag names of %q)", f.file, k, f.fs.Name())}
		}
	}
	var positional []string
	rest := args
	for {
		if err := f.fs.Parse(rest); err != nil {
			if err == flag.ErrHelp {
				f.usage(f.stdout)
				return err
			}
			f.usage(f.stderr)
			return &exitError{code: 2, err: fmt.Errorf("%s: %w", f.fs.Name(), err)}
		}
		left := f.fs.Args()
		if len(left) == 0 {
			break
		}
		if consumed := len(rest) - len(left); consumed > 0 && rest[consumed-1] == "--" {
			positional = append(positional, left...)
			break
		}
		positional = append(positional, left[0])
		rest = left[1:]
	}
	if len(positional) < min || (max >= 0 && len(positional) > max) {
		f.usage(f.stderr)
		want := "no arguments"
		switch {
		case max < 0:
			want = fmt.Sprintf("at least %d %s", min, f.argName)
		case max > 0:
			want = fmt.Sprintf("%d %s", max, f.argName)
		}
		return &exitError{code: 2, err: fmt.Errorf("%s: want %s, got %d argument(s)", f.fs.Name(), want, len(positional))}
	}
	f.args = positional
	f.fs.Visit(func(fl *flag.Flag) {
		if !f.cliOnly[fl.Name] {
			f.origin[fl.Name] = "command line"
		}
	})
	return nil
}

// setting is one effective setting and where its value came from: the
// command line, an environment variable, the config file, or "default".
type setting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

// settingList returns every setting, by name.
func (f *flags) settingList() []setting {
	var out []setting
	f.fs.VisitAll(func(fl *flag.Flag) {
		if fl.Name == "config" || f.cliOnly[fl.Name] {
			return
		}
		source := f.origin[fl.Name]
		if source == "" {
			source = "default"
		}
		out = append(out, setting{Name: fl.Name, Value: fl.Value.String(), Source: source})
	})
	return out
}

// printSettings prints every setting with its value and where it came from.
func (f *flags) printSettings(w io.Writer) {
	for _, s := range f.settingList() {
		fmt.Fprintf(w, "  %-20s %-45s (%s)\n", s.Name, s.Value, s.Source)
	}
}
