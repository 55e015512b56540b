package proxy

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"go.podman.io/image/v5/docker/reference"
)

func TestAuthFileLookup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	auth := base64.StdEncoding.EncodeToString([]byte("mirror-user:mirror-pass"))
	if err := os.WriteFile(path, []byte(`{"auths":{"127.0.0.1:5000":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := NewAuthFile(path)

	named, _ := reference.ParseNormalizedNamed("127.0.0.1:5000/mirror/library/nginx:1")
	got, err := creds.Lookup(named)
	if err != nil {
		t.Fatal(err)
	}
	// containerd hands credentials only to the host ServerAddress parses
	// to as a URL: it must carry a scheme for a host:port to parse.
	if got.GetUsername() != "mirror-user" || got.GetPassword() != "mirror-pass" || got.GetServerAddress() != "https://127.0.0.1:5000" {
		t.Errorf("Lookup(127.0.0.1:5000/...) = %+v", got)
	}

	other, _ := reference.ParseNormalizedNamed("mirror.example.com/library/nginx:1")
	if got, err := creds.Lookup(other); err != nil || got != nil {
		t.Errorf("another host got credentials: %+v, %v", got, err)
	}
}
