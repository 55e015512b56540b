//go:build e2e

package e2e

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metricSet []sample

// parseMetrics reads the Prometheus text exposition format (comments skipped).
func parseMetrics(body string) metricSet {
	var out metricSet
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i >= 0 && line[i] == '{' {
			s.name = line[:i]
			rest = line[i+1:]
			// labels: k="v",k="v"} value
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					break
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				for len(rest) > 0 && rest[0] != '"' {
					if rest[0] == '\\' && len(rest) > 1 {
						switch rest[1] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[1])
						}
						rest = rest[2:]
						continue
					}
					val.WriteByte(rest[0])
					rest = rest[1:]
				}
				if len(rest) > 0 {
					rest = rest[1:]
				}
				s.labels[key] = val.String()
			}
		} else if i >= 0 {
			s.name = line[:i]
			rest = line[i:]
		}
		f := strings.Fields(rest)
		if s.name == "" || len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// sum adds the samples of name whose labels include every label in match.
func (m metricSet) sum(name string, match map[string]string) float64 {
	var total float64
	for _, s := range m {
		if s.name != name || !labelsMatch(s.labels, match) {
			continue
		}
		total += s.value
	}
	return total
}

// failed adds the samples of name matching match whose result label is not "success".
func (m metricSet) failed(name string, match map[string]string) float64 {
	var total float64
	for _, s := range m {
		if s.name == name && labelsMatch(s.labels, match) && s.labels["result"] != "success" {
			total += s.value
		}
	}
	return total
}

func (m metricSet) has(name string) bool {
	for _, s := range m {
		if s.name == name {
			return true
		}
	}
	return false
}

// dump renders the samples whose name starts with prefix, for failure messages.
func (m metricSet) dump(prefix string) string {
	var lines []string
	for _, s := range m {
		if !strings.HasPrefix(s.name, prefix) || strings.HasSuffix(s.name, "_bucket") {
			continue
		}
		var ls []string
		for k, v := range s.labels {
			ls = append(ls, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(ls)
		lines = append(lines, fmt.Sprintf("%s{%s} %v", s.name, strings.Join(ls, ","), s.value))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
