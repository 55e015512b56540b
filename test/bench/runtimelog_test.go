package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Lines as containerd 1.6's CRI plugin writes them (level, quoting and all).
const (
	reqA    = `time="2026-12-03T08:04:07.125423238Z" level=info msg="PullImage \"127.0.0.1:5000/mirror/bench/pull:1\""` + "\n"
	eventA  = `time="2026-12-03T08:04:07.229356217Z" level=info msg="ImageCreate event &ImageCreate{Name:127.0.0.1:5000/mirror/bench/pull:1,Labels:map[string]string{io.cri-containerd.image: managed,},XXX_unrecognized:[],}"` + "\n"
	answerA = `time="2026-12-03T08:04:07.231530238Z" level=info msg="PullImage \"127.0.0.1:5000/mirror/bench/pull:1\" returns image reference \"sha256:836e103e052b538b970ad1b5d128782e33a8c16bd8e29e7b051a64eb1a3ac800\""` + "\n"
	reqB    = `time="2026-12-03T08:04:08.000000000Z" level=info msg="PullImage \"127.0.0.1:9/bench/x:1\""` + "\n"
	failB   = `time="2026-12-03T08:04:10.500000000Z" level=error msg="PullImage \"127.0.0.1:9/bench/x:1\" failed" error="failed to pull and unpack image: context canceled"` + "\n"
	reqC    = `time="2026-12-03T08:04:10.600000000Z" level=info msg="PullImage \"127.0.0.1:5000/mirror/bench/x@sha256:0123\""` + "\n"
	answerC = `time="2026-12-03T08:04:10.650000000Z" level=info msg="PullImage \"127.0.0.1:5000/mirror/bench/x@sha256:0123\" returns image reference \"sha256:0123\""` + "\n"
)

func TestPullSpans(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		total time.Duration
		n     int
		err   error
	}{
		{"one pull, other lines between", reqA + eventA + answerA, 106107 * time.Microsecond, 1, nil},
		// A failed attempt (a mirror given up) is not the runtime's pull
		// of the image; the pull that served it is.
		{"a failed attempt, then the pull", reqB + failB + reqC + answerC, 50 * time.Millisecond, 1, nil},
		// Two requests at once, answered in another order, pair by image.
		{"interleaved", reqA + reqC + answerC + answerA, 106107*time.Microsecond + 50*time.Millisecond, 2, nil},
		{"nothing pulled", eventA, 0, 0, nil},
		{"a request without its answer", reqA + eventA, 0, 0, errUnpaired},
		{"an answer without its request", answerA, 0, 0, errUnpaired},
	} {
		total, n, err := pullSpans(tc.text)
		if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
			continue
		}
		if total != tc.total || n != tc.n {
			t.Errorf("%s: %s over %d pulls, want %s over %d", tc.name, total, n, tc.total, tc.n)
		}
	}
	if _, _, err := pullSpans(`time="yesterday" level=info msg="PullImage \"a:1\""` + "\n"); err == nil {
		t.Error("a line with an unreadable time was accepted")
	}
}

// pullRequests counts the requests for one image: not their answers, not
// other images' requests.
func TestPullRequests(t *testing.T) {
	text := reqA + eventA + answerA + reqB + failB + reqA + reqC + answerC
	if n := pullRequests(text, "127.0.0.1:5000/mirror/bench/pull:1"); n != 2 {
		t.Errorf("%d requests for pull:1, want 2", n)
	}
	if n := pullRequests(text, "127.0.0.1:5000/mirror/bench/pull"); n != 0 {
		t.Errorf("%d requests for a prefix of the name, want 0", n)
	}
}

// runtimeLog reads only what was logged after skip, and only whole lines:
// a line being written is read by the next call.
func TestRuntimeLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "containerd.log")
	if err := os.WriteFile(path, []byte(reqB+failB), 0o644); err != nil {
		t.Fatal(err)
	}
	l := &runtimeLog{path: path}
	if err := l.skip(); err != nil {
		t.Fatal(err)
	}
	appendLog := func(s string) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	// Only whole lines are read: a request whose answer is still being
	// written is a request without its answer.
	appendLog(reqA + eventA + answerA[:40])
	if _, _, err := l.pulled(); !errors.Is(err, errUnpaired) {
		t.Fatalf("half an answer read as an answer: err %v", err)
	}
	// skip passes everything, the half line too: what is left of it does
	// not read as a line of the CRI plugin.
	if err := l.skip(); err != nil {
		t.Fatal(err)
	}
	appendLog(answerA[40:] + reqC + answerC)
	total, n, err := l.pulled()
	if err != nil || n != 1 || total != 50*time.Millisecond {
		t.Fatalf("got %s over %d pulls (err %v), want 50ms over 1", total, n, err)
	}
	if _, n, err := l.pulled(); err != nil || n != 0 {
		t.Errorf("read twice: %d pulls, err %v", n, err)
	}
	if _, _, err := (&runtimeLog{path: filepath.Join(t.TempDir(), "absent.log")}).pulled(); err == nil {
		t.Error("a log that is not there read as empty")
	}
}
