package proxy

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// headRegistry is an in-process registry holding app:1, behind a handler
// that counts requests and new connections, and (with token set) wants a
// bearer token from its own /token endpoint, given for basic credentials.
type headRegistry struct {
	srv  *httptest.Server
	host string

	mu       sync.Mutex
	requests map[string]int // "METHOD path"
	tokens   []string       // basic users that asked /token, in order
	conns    int            // opened
	closed   int
	bearer   string // token wanted, "" for none
}

func newHeadRegistry(t testing.TB, useTLS, token bool) *headRegistry {
	t.Helper()
	r := &headRegistry{requests: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.Method+" "+req.URL.Path]++
		r.mu.Unlock()
		if !token {
			reg.ServeHTTP(w, req)
			return
		}
		if req.URL.Path == "/token" {
			user, pass, ok := req.BasicAuth()
			if !ok || pass != "secret-"+user {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			r.mu.Lock()
			r.tokens = append(r.tokens, user)
			r.mu.Unlock()
			fmt.Fprintf(w, `{"token": "tok-%s"}`, user)
			return
		}
		if !strings.HasPrefix(req.Header.Get("Authorization"), "Bearer tok-") {
			scheme := "http"
			if useTLS {
				scheme = "https"
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s://%s/token",service="test"`, scheme, req.Host))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		r.bearer = req.Header.Get("Authorization")
		r.mu.Unlock()
		reg.ServeHTTP(w, req)
	})
	r.srv = httptest.NewUnstartedServer(h)
	r.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		r.mu.Lock()
		defer r.mu.Unlock()
		switch s {
		case http.StateNew:
			r.conns++
		case http.StateClosed:
			r.closed++
		}
	}
	if useTLS {
		r.srv.StartTLS()
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(strings.TrimPrefix(r.srv.URL, "http://"), "https://")

	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Written straight into the registry, not through the front.
	direct := httptest.NewServer(reg)
	defer direct.Close()
	if err := remote.Write(mustTag(t, strings.TrimPrefix(direct.URL, "http://")+"/app:1"), img); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *headRegistry) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[key]
}

func (r *headRegistry) lastBearer() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bearer
}

func (r *headRegistry) newConns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

// open is how many connections to the registry are open.
func (r *headRegistry) open() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns - r.closed
}

func (r *headRegistry) ref(t testing.TB, s string) reference.Named {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(r.host + "/" + s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// noRules is a registries configuration with no rules at all.
func noRules(t *testing.T) *types.SystemContext {
	return &types.SystemContext{SystemRegistriesConfPath: os.DevNull, SystemRegistriesConfDirPath: filepath.Join(t.TempDir(), "none.d")}
}

// TestHeadClientsOneRoundTrip: after the first HEAD to a host, the next
// one reuses its connection and its ping: one request, no new connection.
// A containers/image client per request pings again on a new connection.
func TestHeadClientsOneRoundTrip(t *testing.T) {
	reg := newHeadRegistry(t, false, false)
	h := newHeadClients("/nonexistent/auth.json", "test")
	want, err := remote.Head(mustTag(t, reg.host+"/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	before := reg.newConns()
	for i := range 3 {
		d, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), true, nil)
		if err != nil || d.String() != want.Digest.String() {
			t.Fatalf("HEAD %d: %s, %v; want %s", i, d, err, want.Digest)
		}
		if i == 0 {
			before = reg.newConns()
		}
	}
	if n := reg.count("GET /v2/"); n != 2 { // remote.Head's ping and the first check's
		t.Errorf("pings = %d, want one for the three checks (and remote.Head's)", n-1)
	}
	if n := reg.count("HEAD /v2/app/manifests/1"); n != 4 {
		t.Errorf("HEADs = %d, want 3 (and remote.Head's)", n-1)
	}
	if n := reg.newConns() - before; n != 0 {
		t.Errorf("the checks after the first opened %d connections, want 0", n)
	}
}

// TestHeadClientsDropped: a client dropped after its TTL closes its kept
// connections at once, rather than leaving them until the idle timeout.
func TestHeadClientsDropped(t *testing.T) {
	reg := newHeadRegistry(t, false, false)
	h := newHeadClients("/nonexistent/auth.json", "test")
	now := time.Unix(0, 0)
	h.now = func() time.Time { return now }
	if _, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), true, nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.open(); n == 0 {
		t.Fatal("no connection kept after a HEAD")
	}
	now = now.Add(headClientTTL)
	if _, err := h.client(headKey{host: "other.example"}, authn.AuthConfig{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for reg.open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := reg.open(); n != 0 {
		t.Errorf("%d connections still open after the client was dropped", n)
	}
}

// TestHeadClientsToken: a registry that wants a bearer token gets one
// token request per credentials, not one per HEAD; other credentials get
// a client (and a token) of their own.
func TestHeadClientsToken(t *testing.T) {
	reg := newHeadRegistry(t, false, true)
	h := newHeadClients("/nonexistent/auth.json", "test")
	alice := &runtimeapi.AuthConfig{Username: "alice", Password: "secret-alice"}
	bob := &runtimeapi.AuthConfig{Username: "bob", Password: "secret-bob"}
	for _, auth := range []*runtimeapi.AuthConfig{alice, alice, bob, alice, bob} {
		if _, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), true, auth); err != nil {
			t.Fatalf("%s: %v", auth.Username, err)
		}
		if got, want := reg.lastBearer(), "Bearer tok-"+auth.Username; got != want {
			t.Errorf("the registry saw %q, want %q", got, want)
		}
	}
	reg.mu.Lock()
	tokens := strings.Join(reg.tokens, ",")
	reg.mu.Unlock()
	if got := tokens; got != "alice,bob" {
		t.Errorf("token requests by %q, want one for alice and one for bob", got)
	}
	if _, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), true, &runtimeapi.AuthConfig{Username: "eve", Password: "wrong"}); err == nil {
		t.Error("wrong credentials: no error")
	}
}

// TestHeadClientsNoPlainHTTP: a host not marked insecure is never sent a
// plain-HTTP request, though it is on loopback (where go-containerregistry
// would fall back to HTTP), so credentials never travel in clear.
func TestHeadClientsNoPlainHTTP(t *testing.T) {
	reg := newHeadRegistry(t, false, false)
	h := newHeadClients("/nonexistent/auth.json", "test")
	auth := &runtimeapi.AuthConfig{Username: "u", Password: "p"}
	if _, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), false, auth); err == nil {
		t.Fatal("HEAD to a plain-HTTP registry not marked insecure succeeded")
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.requests) != 0 {
		t.Errorf("the registry got plain-HTTP requests %v", reg.requests)
	}
}

// TestHeadClientsCertsDir: a TLS registry is trusted through the CA in its
// certs.d directory, and refused without it.
func TestHeadClientsCertsDir(t *testing.T) {
	reg := newHeadRegistry(t, true, false)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.srv.Certificate().Raw})

	untrusting := newHeadClients("/nonexistent/auth.json", "test")
	untrusting.certsDir = t.TempDir()
	if _, err := untrusting.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), false, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("no CA for the host: %v, want a certificate error", err)
	}

	h := newHeadClients("/nonexistent/auth.json", "test")
	h.certsDir = t.TempDir()
	dir := filepath.Join(h.certsDir, reg.host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:1"), false, nil); err != nil {
		t.Fatalf("with the host's CA in certs.d: %v", err)
	}
}

// TestHeadClientsAbsent: a registry's 404 to the HEAD is told apart from
// other failures.
func TestHeadClientsAbsent(t *testing.T) {
	reg := newHeadRegistry(t, false, false)
	h := newHeadClients("/nonexistent/auth.json", "test")
	_, err := h.Digest(context.Background(), noRules(t), reg.ref(t, "app:2"), true, nil)
	if err == nil || !headAbsent(context.Background(), err) {
		t.Errorf("missing tag: %v, want a 404", err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	n, _ := reference.ParseNormalizedNamed(strings.TrimPrefix(closed.URL, "http://") + "/app:1")
	if _, err := h.Digest(context.Background(), noRules(t), n, true, nil); err == nil || headAbsent(context.Background(), err) {
		t.Errorf("closed port: %v, want an error that is not a 404", err)
	}
}

// TestHeadClientsBounded: at most headClientsMax clients are kept, and a
// client is made anew after headClientTTL.
func TestHeadClientsBounded(t *testing.T) {
	h := newHeadClients("", "test")
	now := time.Unix(0, 0)
	h.now = func() time.Time { return now }
	first, err := h.client(headKey{host: "a"}, authn.AuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 * headClientsMax {
		now = now.Add(time.Millisecond)
		if _, err := h.client(headKey{host: fmt.Sprint("h", i)}, authn.AuthConfig{}); err != nil {
			t.Fatal(err)
		}
		if len(h.clients) > headClientsMax {
			t.Fatalf("%d clients kept, want at most %d", len(h.clients), headClientsMax)
		}
	}
	if _, ok := h.clients[headKey{host: "a"}]; ok {
		t.Error("the oldest client was kept past the bound")
	}
	again, _ := h.client(headKey{host: "b"}, authn.AuthConfig{})
	if same, _ := h.client(headKey{host: "b"}, authn.AuthConfig{}); same != again {
		t.Error("a fresh client was not reused")
	}
	now = now.Add(headClientTTL)
	if renewed, _ := h.client(headKey{host: "b"}, authn.AuthConfig{}); renewed == again || renewed == first {
		t.Error("a client past its TTL was reused")
	}
}

// BenchmarkHeadClients is one tag check HEAD through a kept client, beside
// a bare HEAD on a kept connection (the floor): what the client adds.
func BenchmarkHeadClients(b *testing.B) {
	reg := newHeadRegistry(b, false, false)
	h := newHeadClients(filepath.Join(b.TempDir(), "auth.json"), "bench")
	sys := &types.SystemContext{SystemRegistriesConfPath: os.DevNull, SystemRegistriesConfDirPath: filepath.Join(b.TempDir(), "none.d")}
	ref := reg.ref(b, "app:1")
	b.Run("client", func(b *testing.B) {
		for b.Loop() {
			if _, err := h.Digest(context.Background(), sys, ref, true, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bare", func(b *testing.B) {
		c := &http.Client{}
		for b.Loop() {
			resp, err := c.Head(reg.srv.URL + "/v2/app/manifests/1")
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	})
}
