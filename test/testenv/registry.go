package testenv

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteRegistry writes the config of a docker-registry (distribution 2.8) serving plain HTTP
// on addr (127.0.0.1:PORT) with its data under dir/data, and returns its path. Run it as:
//
//	docker-registry serve PATH
//
// logLevel "info" logs every request (the e2e tests count them); "warn" keeps the log short.
// Deletes are enabled: tests remove manifests to make a mirror miss.
func WriteRegistry(dir, addr, logLevel string) (string, error) {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: %s
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, logLevel, data, addr)
	path := filepath.Join(dir, "config.yml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}
