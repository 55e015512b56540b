package resolver

// Config is a read-only copy of the configuration in effect: the files read
// and the merged rules. It is what check-config prints as JSON, what the
// running daemon reports on /status, and where the metrics learn which
// registry and mirror label values exist.
type Config struct {
	// ConfPath is the main registries.conf; ConfMissing is set when it was
	// defaulted and does not exist (only drop-ins apply then).
	ConfPath    string `json:"registries_conf"`
	ConfMissing bool   `json:"registries_conf_missing"`
	// ConfDir is the drop-in directory; DropIns the files read from it, in
	// the order they apply.
	ConfDir string   `json:"drop_in_dir"`
	DropIns []string `json:"drop_ins"`
	// Rules in the library's order (by prefix).
	Rules []Rule `json:"rules"`
}

// Rule is one [[registry]] in effect.
type Rule struct {
	Prefix string `json:"prefix"`
	// File defined the rule in effect (a later drop-in replaces an earlier one).
	File string `json:"file,omitempty"`
	// Location is where the source is pulled from ("" for a wildcard rule
	// without location: the image's own host).
	Location string `json:"location"`
	Insecure bool   `json:"insecure"`
	// Blocked: the source is never contacted. With mirrors that is
	// ImageTagMirrorSet's NeverContactSource; without, every pull is refused.
	Blocked            bool     `json:"blocked"`
	NeverContactSource bool     `json:"never_contact_source"`
	MirrorByDigestOnly bool     `json:"mirror_by_digest_only"`
	Mirrors            []Mirror `json:"mirrors"`
}

// Mirror is one mirror of a rule, in the order it is tried.
type Mirror struct {
	Location string `json:"location"`
	Insecure bool   `json:"insecure"`
	// PullFromMirror is the effective policy: all, tag-only or digest-only.
	PullFromMirror string `json:"pull_from_mirror"`
}

// Config returns the configuration in effect. The result is a copy; it does
// not change on a later Reload.
func (r *Resolver) Config() Config {
	rs := r.rules.Load()
	c := Config{
		ConfPath:    rs.confPath,
		ConfMissing: rs.mainMissing,
		ConfDir:     rs.confDir,
		DropIns:     append([]string{}, rs.dropIns...),
		Rules:       make([]Rule, 0, len(rs.registries)),
	}
	for i := range rs.registries {
		reg := &rs.registries[i]
		rule := Rule{
			Prefix:             reg.Prefix,
			File:               rs.origin[reg.Prefix],
			Location:           reg.Location,
			Insecure:           reg.Insecure,
			Blocked:            reg.Blocked,
			NeverContactSource: reg.Blocked && len(reg.Mirrors) > 0,
			MirrorByDigestOnly: reg.MirrorByDigestOnly,
			Mirrors:            make([]Mirror, 0, len(reg.Mirrors)),
		}
		for _, m := range reg.Mirrors {
			rule.Mirrors = append(rule.Mirrors, Mirror{
				Location:       m.Location,
				Insecure:       m.Insecure,
				PullFromMirror: mirrorPolicy(reg, m),
			})
		}
		c.Rules = append(c.Rules, rule)
	}
	return c
}
