//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/test/testenv"
)

// fault is what a registryFront does to one request instead of passing it through.
type fault int

const (
	faultNone         fault = iota
	faultStatus500          // answer 500 without asking the registry
	faultCutBody            // send the headers and half the body, then close the connection
	faultTamper             // send the registry's answer with one byte of the body changed
	faultCloseNoReply       // close the connection without an answer
	faultTrickle            // send the headers, then the body a byte at a time, 4 bytes a second
)

// frontRequest is one request a registryFront received, as it arrived.
type frontRequest struct {
	Method    string
	Path      string
	Auth      string // the Authorization header
	UserAgent string
	Range     string
}

func (r frontRequest) String() string {
	return fmt.Sprintf("%s %s (user agent %q, authorization %q, range %q)", r.Method, r.Path, r.UserAgent, r.Auth, r.Range)
}

// registryFront is an HTTP server on 127.0.0.1 in front of one of the harness's registries: it
// passes requests through (httputil.ReverseProxy) and can record them, require basic auth,
// delay them, or break them (see fault). Its knobs are set before the first request.
type registryFront struct {
	host    string // 127.0.0.1:PORT
	backend *url.URL
	srv     *httptest.Server
	rp      *httputil.ReverseProxy
	closing chan struct{}
	once    sync.Once

	// user and pass, when set, are required as basic auth; other requests get a 401 challenge.
	user, pass string
	// faultFor picks the fault for a request (nil: none).
	faultFor func(r *http.Request) fault
	// delayFor picks a delay before a request is served (nil: none). Bounded by the request.
	delayFor func(r *http.Request) time.Duration

	mu   sync.Mutex
	reqs []frontRequest
}

// newRegistryFront starts a front for the registry at backendHost (127.0.0.1:PORT). The test's
// cleanup stops it. Set the knobs right after, before anything is pointed at it.
func newRegistryFront(t *testing.T, backendHost string) *registryFront {
	t.Helper()
	f := &registryFront{backend: &url.URL{Scheme: "http", Host: backendHost}, closing: make(chan struct{})}
	f.rp = httputil.NewSingleHostReverseProxy(f.backend)
	// A client hanging up mid-answer is expected here, not worth a log line.
	f.rp.ErrorLog = log.New(io.Discard, "", 0)
	f.rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		w.WriteHeader(http.StatusBadGateway)
	}
	// httptest.NewServer listens on 127.0.0.1:0.
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.host = strings.TrimPrefix(f.srv.URL, "http://")
	t.Cleanup(f.close)
	return f
}

func (f *registryFront) close() {
	f.once.Do(func() {
		close(f.closing)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
}

// requests returns a copy of what the front received so far.
func (f *registryFront) requests() []frontRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]frontRequest(nil), f.reqs...)
}

// count returns how many recorded requests match.
func (f *registryFront) count(match func(frontRequest) bool) int {
	n := 0
	for _, r := range f.requests() {
		if match(r) {
			n++
		}
	}
	return n
}

// dump renders the recorded requests for a failure message (the last max of them).
func (f *registryFront) dump(max int) string {
	reqs := f.requests()
	if len(reqs) > max {
		reqs = reqs[len(reqs)-max:]
	}
	var b strings.Builder
	for _, r := range reqs {
		b.WriteString("  " + r.String() + "\n")
	}
	return b.String()
}

func (f *registryFront) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, frontRequest{
		Method: r.Method, Path: r.URL.Path, Auth: r.Header.Get("Authorization"),
		UserAgent: r.UserAgent(), Range: r.Header.Get("Range"),
	})
	f.mu.Unlock()

	if f.user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != f.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="e2e"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
	}
	if f.delayFor != nil {
		if d := f.delayFor(r); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			case <-f.closing:
				return
			}
		}
	}
	ft := faultNone
	if f.faultFor != nil {
		ft = f.faultFor(r)
	}
	switch ft {
	case faultNone:
		f.rp.ServeHTTP(w, r)
	case faultStatus500:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}`)
	case faultCloseNoReply:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case faultCutBody, faultTamper, faultTrickle:
		f.serveBroken(w, r, ft)
	}
}

// serveBroken fetches the registry's answer itself and sends it broken.
func (f *registryFront) serveBroken(w http.ResponseWriter, r *http.Request, ft fault) {
	if ft == faultCutBody && r.Header.Get("Range") != "" {
		// containerd resumes a cut blob with a ranged GET: hang up before any byte, so the
		// resumed fetch makes no progress and the mirror stays broken.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, f.backend.String()+r.URL.RequestURI(), nil)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	for _, h := range []string{"Accept", "Range"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	// A client that does not follow redirects: the registry serves blobs itself, but a
	// redirect would bypass the fault.
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if ft == faultTamper && resp.StatusCode == http.StatusOK && len(body) > 0 {
		body = tamper(body)
	}
	if ft == faultTrickle && resp.StatusCode == http.StatusOK {
		f.trickle(w, r, resp, body)
		return
	}
	if ft == faultTamper || ft == faultTrickle || resp.StatusCode != http.StatusOK {
		for k, vs := range resp.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
		return
	}
	// faultCutBody: announce the whole body, send half of it and hang up.
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	writeCutResponse(buf, resp, r.Method, body[:len(body)/2], len(body))
}

// trickle sends the registry's answer a byte at a time, until the body ends, the client goes
// away or the front closes.
func (f *registryFront) trickle(w http.ResponseWriter, r *http.Request, resp *http.Response, body []byte) {
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	for _, b := range body {
		if _, err := w.Write([]byte{b}); err != nil || rc.Flush() != nil {
			return
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-r.Context().Done():
			return
		case <-f.closing:
			return
		}
	}
}

func writeCutResponse(buf *bufio.ReadWriter, resp *http.Response, method string, part []byte, total int) {
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	for k, vs := range resp.Header {
		if k == "Content-Length" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			fmt.Fprintf(buf, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(buf, "Content-Length: %d\r\nConnection: close\r\n\r\n", total)
	if method != http.MethodHead {
		_, _ = buf.Write(part)
	}
	_ = buf.Flush()
}

var hexDigit = regexp.MustCompile(`sha256:[0-9a-f]`)

// tamper changes one byte and keeps the length: in a manifest the first hex digit of the first
// digest (still valid JSON, other content), elsewhere the middle byte.
func tamper(body []byte) []byte {
	out := bytes.Clone(body)
	if loc := hexDigit.FindIndex(out); loc != nil {
		i := loc[1] - 1
		if out[i] == '0' {
			out[i] = '1'
		} else {
			out[i] = '0'
		}
		return out
	}
	out[len(out)/2] ^= 0xff
	return out
}

// --- request classes ------------------------------------------------------------------------------

var (
	manifestPath = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)
	blobPath     = regexp.MustCompile(`^/v2/(.+)/blobs/(sha256:[0-9a-f]+)$`)
)

func isManifest(r *http.Request) bool { return manifestPath.MatchString(r.URL.Path) }
func isBlob(r *http.Request) bool     { return blobPath.MatchString(r.URL.Path) }

// fromRuntime tells containerd's requests from the proxy's probe (user agent
// cri-mirror-proxy/VERSION) and anything else.
func fromRuntime(userAgent string) bool { return strings.HasPrefix(userAgent, "containerd") }

func fromProbe(userAgent string) bool { return strings.HasPrefix(userAgent, "cri-mirror-proxy") }

// basicCreds decodes a Basic Authorization header ("" if it is not one).
func basicCreds(header string) string {
	enc, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return ""
	}
	return string(b)
}

// --- environment helpers ---------------------------------------------------------------------------

// allowHost makes containerd c reach host at server (e.g. "http://127.0.0.1:PORT") until the
// test ends (criRuntime.allowHost).
func allowHost(t *testing.T, c *containerd, host, server string) {
	t.Helper()
	newContainerdRuntime(c).allowHost(t, host, server)
}

// pushRandom pushes one new random image under every ref (full names, e.g.
// env.mirror.host+"/m1/e2e/x:v1") and returns what the runtime will report for it. Unlike
// pushFixtures it records nothing in env, so it may run in parallel.
func pushRandom(refs ...string) (pushedImage, error) {
	img, err := testenv.Random(1024, 1, testenv.Arch)
	if err != nil {
		return pushedImage{}, err
	}
	return testenv.PushAs(context.Background(), img, refs...)
}

// mustPushRandom is pushRandom failing the test.
func mustPushRandom(t *testing.T, refs ...string) pushedImage {
	t.Helper()
	p, err := pushRandom(refs...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pushMany pushes n random images, ref(i) for i in [0,n), a few at a time.
func pushMany(t *testing.T, n int, ref func(i int) string) []pushedImage {
	t.Helper()
	out := make([]pushedImage, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = pushRandom(ref(i))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// statusOf is a GET on the proxy's metrics listener that reports the status code.
func (p *proxy) statusOf(path string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + p.metricsAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitExit waits up to d for the proxy process to end and reports whether it did.
func (p *proxy) waitExit(d time.Duration) bool {
	select {
	case <-p.proc.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill9 kills the proxy with SIGKILL (by pid) and waits for it to be gone.
func (p *proxy) kill9() {
	p.t.Helper()
	if p.conn != nil {
		defer func() { p.conn.Close(); p.conn = nil }()
	}
	if err := p.proc.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("kill -9 %d: %v", p.proc.cmd.Process.Pid, err)
	}
	if !p.waitExit(10 * time.Second) {
		p.t.Fatalf("the proxy (pid %d) is still there 10s after SIGKILL", p.proc.cmd.Process.Pid)
	}
}

// attemptLog returns the proxy's log lines about pull attempts and the mirror breaker, which
// say why a candidate was passed over.
func (p *proxy) attemptLog() string {
	var out []string
	for _, line := range strings.Split(readFile(p.logPath()), "\n") {
		if strings.Contains(line, "attempt") || strings.Contains(line, "mirror skipped") || strings.Contains(line, "held back") {
			out = append(out, "  "+line)
		}
	}
	return strings.Join(out, "\n")
}
