package store

import (
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultLockTimeout bounds how long Open waits for another process to
// release the database file. bbolt would otherwise wait forever, and a
// proxy hung at start looks like a hung node rather than a clear error.
const DefaultLockTimeout = time.Second

// Option configures Open.
type Option func(*options)

type options struct {
	lockTimeout time.Duration
	onChange    func(n int)
	log         logrus.FieldLogger
	maxTags     int
}

func defaultOptions() options {
	return options{
		lockTimeout: DefaultLockTimeout,
		log:         logrus.StandardLogger(),
		maxTags:     MaxTagRecords,
	}
}

// WithOnChange registers fn to be called with the alias count once Open has
// loaded the table and again after every committed change; it exists to keep
// an alias-count gauge current. fn runs while the store holds its write lock,
// so it must be quick and must not call Put, Delete or DeleteImage.
func WithOnChange(fn func(n int)) Option {
	return func(o *options) { o.onChange = fn }
}

// WithLockTimeout overrides DefaultLockTimeout. A value <= 0 keeps the default,
// because bbolt reads 0 as "wait forever".
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.lockTimeout = d
		}
	}
}

// WithLogger sets where Open reports skipped (undecodable) entries.
// The default is logrus' standard logger.
func WithLogger(l logrus.FieldLogger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithMaxTagRecords overrides MaxTagRecords. A value <= 0 keeps the default.
func WithMaxTagRecords(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxTags = n
		}
	}
}
