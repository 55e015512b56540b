package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// runtimeLog reads, from containerd's log, how long the runtime itself took
// over the pulls it was asked for: its CRI plugin logs a line when a
// PullImage request comes in and another when it answers. A whole pull
// varies by several milliseconds from one to the next on a small machine
// (download, unpack, the disk); the same pull's time outside the runtime
// does not, so added times judged on it are not drowned in the runtime's
// noise.
type runtimeLog struct {
	path string
	off  int64 // where the next read starts
}

// skip moves past everything logged so far.
func (l *runtimeLog) skip() error {
	fi, err := os.Stat(l.path)
	if err != nil {
		return fmt.Errorf("containerd log: %w", err)
	}
	l.off = fi.Size()
	return nil
}

// pulled reads what was logged since skip or the last pulled (whole lines
// only) and returns the time the runtime took over the PullImage requests
// in it that it answered with an image, summed, and how many there were.
func (l *runtimeLog) pulled() (time.Duration, int, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return 0, 0, fmt.Errorf("containerd log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return 0, 0, fmt.Errorf("containerd log: %w", err)
	}
	// Bounded: the log grows by a few lines per pull.
	data, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return 0, 0, fmt.Errorf("containerd log: %w", err)
	}
	whole := bytes.LastIndexByte(data, '\n') + 1
	l.off += int64(whole)
	return pullSpans(string(data[:whole]))
}

// pullLine is a CRI plugin log line about a PullImage request: its time,
// the image asked for, and what follows the name (`"` on the line of the
// request, ` returns image reference ...` on its answer, ` failed"` on an
// error).
var pullLine = regexp.MustCompile(`^time="([^"]+)" level=\w+ msg="PullImage \\"(.+?)\\"(.*)$`)

// pullRequests counts the PullImage requests for image in text (their
// lines, not their answers').
func pullRequests(text, image string) int {
	n := 0
	for line := range strings.Lines(text) {
		if m := pullLine.FindStringSubmatch(strings.TrimRight(line, "\n")); m != nil && m[2] == image && m[3] == `"` {
			n++
		}
	}
	return n
}

// errUnpaired is a pull whose request or answer is not in the text read.
var errUnpaired = errors.New("containerd log: a PullImage request without its answer, or an answer without its request")

// pullSpans sums, over the successful PullImage requests in text (the
// request's line to the line of its answer with an image), the time
// between the two lines. Requests that failed are not counted: a failed
// attempt is time the caller chose to spend, not the pull of the image.
func pullSpans(text string) (total time.Duration, n int, err error) {
	open := map[string][]time.Time{} // image → requests not answered yet, oldest first
	for line := range strings.Lines(text) {
		m := pullLine.FindStringSubmatch(strings.TrimRight(line, "\n"))
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			return 0, 0, fmt.Errorf("containerd log: time of %q: %w", line, err)
		}
		image, rest := m[2], m[3]
		switch {
		case rest == `"`:
			open[image] = append(open[image], at)
		case strings.HasPrefix(rest, " returns image reference "), strings.HasPrefix(rest, ` failed"`):
			if len(open[image]) == 0 {
				return 0, 0, fmt.Errorf("%w (%s)", errUnpaired, image)
			}
			start := open[image][0]
			open[image] = open[image][1:]
			if strings.HasPrefix(rest, " returns") {
				total += at.Sub(start)
				n++
			}
		}
	}
	for image, left := range open {
		if len(left) > 0 {
			return 0, 0, fmt.Errorf("%w (%s)", errUnpaired, image)
		}
	}
	return total, n, nil
}
