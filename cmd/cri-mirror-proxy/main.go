// Command cri-mirror-proxy is a CRI image-service proxy that pulls tag
// references from registry mirrors and keeps the original image names.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `cri-mirror-proxy: a CRI ImageService proxy that pulls through registry mirrors.

Usage:
  cri-mirror-proxy serve [flags]           serve CRI on a unix socket in front of the runtime
  cri-mirror-proxy status [flags]          ask the running daemon for its rules, mirrors and state
  cri-mirror-proxy resolve [flags] IMAGE   print the ordered pull candidates for IMAGE and why
  cri-mirror-proxy check-config [flags]    validate the settings and mirror rules and print them
  cri-mirror-proxy import [flags] FILE...  convert OpenShift mirror sets into a registries.conf drop-in
  cri-mirror-proxy publish-index [flags] SOURCE_IMAGE MIRROR_REPOSITORY
                                           copy a multi-arch image's index into a companion artifact on a mirror
  cri-mirror-proxy version                 print the version

Run "cri-mirror-proxy COMMAND --help" for the flags of a command. Flags may
come before or after arguments. Every setting can also be given by an
environment variable, shown in the help. status, resolve and check-config
print JSON with -o json.

Exit status: 0 done; 1 the command failed (the runtime, the daemon or a file
could not be reached, a pull would be refused); 2 bad input (a command,
flag, setting, config or rules file, or image reference that is wrong).
`

// exitError carries the exit code of a failed command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "cri-mirror-proxy:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: errors.New("no command given")}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve", "resolve", "check-config", "status":
		cfg, err := parseServe(cmd, rest, stdout, stderr)
		if err != nil {
			return err
		}
		switch cmd {
		case "serve":
			return serve(ctx, cfg)
		case "resolve":
			return resolve(cfg, stdout, stderr)
		case "status":
			return status(ctx, cfg, stdout)
		default:
			return checkConfig(cfg, stdout)
		}
	case "import":
		cfg, err := parseImport(rest, stdout, stderr)
		if err != nil {
			return err
		}
		return runImport(cfg, stdout)
	case "publish-index":
		cfg, err := parsePublish(rest, stdout, stderr)
		if err != nil {
			return err
		}
		return publishIndex(ctx, cfg, stdout)
	case "version", "--version":
		fmt.Fprintf(stdout, "cri-mirror-proxy %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: fmt.Errorf("unknown command %q", cmd)}
	}
}
