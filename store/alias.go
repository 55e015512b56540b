package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Alias maps an original image reference to the image the runtime holds.
type Alias struct {
	// Name is the original reference, normalised, e.g. "gcr.io/x/y:t" or
	// "gcr.io/x/y@sha256:…". It is the unique key.
	Name string
	// ImageID is the runtime's image id. containerd reports "sha256:…",
	// CRI-O a bare hex digest, so the store does not insist on a form.
	ImageID string
	// Mirror is the reference actually pulled,
	// e.g. "127.0.0.1:5000/mirror/gcr.io/x/y:t".
	Mirror string
	// Created is when the alias was first recorded.
	Created time.Time
}

// record is the on-disk form. It is separate from Alias so that renaming a
// Go field can never silently change the file format.
type record struct {
	Name    string    `json:"name"`
	ImageID string    `json:"image_id"`
	Mirror  string    `json:"mirror,omitempty"`
	Created time.Time `json:"created"`
}

func (a Alias) validate() error {
	if a.Name == "" {
		return errors.New("alias without a name")
	}
	if a.ImageID == "" {
		return fmt.Errorf("alias %s without an image id", a.Name)
	}
	return nil
}

func encode(a Alias) ([]byte, error) {
	return json.Marshal(record(a))
}

// decode parses a stored value and checks it against the key it was stored
// under, so a value written under the wrong key is reported, not trusted.
func decode(key, value []byte) (Alias, error) {
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return Alias{}, err
	}
	a := Alias(r)
	if a.Name != string(key) {
		return Alias{}, fmt.Errorf("value names %q", a.Name)
	}
	if err := a.validate(); err != nil {
		return Alias{}, err
	}
	return a, nil
}

// normalizeTime drops the monotonic clock reading and the location so that an
// alias compares equal before and after a round trip through the file.
func normalizeTime(t time.Time) time.Time {
	return t.Round(0).UTC()
}
