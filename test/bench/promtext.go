package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads the proxy's /metrics. The benchmark needs a handful of
// counters, so a small parser of the text format does; it skips anything it
// does not understand rather than failing the run.
func scrape(ctx context.Context, addr string) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// Plain text: no gzip, so the proxy's cost of answering is the same
	// every time and can be subtracted (see allocCounter).
	req.Header.Set("Accept", "text/plain")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", addr, resp.Status)
	}
	var out []sample
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s, ok := parseSample(sc.Text()); ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

func parseSample(line string) (sample, bool) {
	if line == "" || line[0] == '#' {
		return sample{}, false
	}
	var s sample
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return sample{}, false
		}
		s.name, s.labels, rest = line[:i], parseLabels(line[i+1:j]), line[j+1:]
	} else {
		var ok bool
		s.name, rest, ok = strings.Cut(line, " ")
		if !ok {
			return sample{}, false
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return sample{}, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return sample{}, false
	}
	s.value = v
	return s, true
}

// parseLabels reads k="v",k2="v2". Values here are registry and mirror
// names, so backslash escapes are honoured but nothing fancier.
func parseLabels(s string) map[string]string {
	labels := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, `="`)
		if !ok {
			break
		}
		var v strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
			}
			v.WriteByte(rest[i])
		}
		labels[strings.TrimLeft(k, ", ")] = v.String()
		if i >= len(rest) {
			break
		}
		s = rest[i+1:]
	}
	return labels
}

// sum adds the samples of one family whose labels pass keep (nil: all).
func sum(samples []sample, name string, keep func(map[string]string) bool) float64 {
	var total float64
	for _, s := range samples {
		if s.name == name && (keep == nil || keep(s.labels)) {
			total += s.value
		}
	}
	return total
}

// runtimePulls counts the pull attempts that reached the runtime: the
// results a runtime call produces, not the skipped/missing/unreachable
// screenings that never asked it.
func runtimePulls(samples []sample) float64 {
	return sum(samples, "cri_mirror_pull_attempts_total", func(l map[string]string) bool {
		switch l["result"] {
		case "success", "error", "timeout", "canceled":
			return true
		}
		return false
	})
}

// allocCounter measures the proxy's heap allocations over a window of calls
// from the Go runtime's own counters on /metrics (go_memstats_mallocs_total,
// go_memstats_alloc_bytes_total). That is the real binary with its
// interceptors and its connection to the runtime, not a test double. The
// cost of the scrapes themselves is measured with no calls in between and
// subtracted.
type allocCounter struct {
	addr                string
	scrapeObjs, scrapeB float64
}

type allocSnap struct{ objs, bytes float64 }

func (a *allocCounter) snap(ctx context.Context) (allocSnap, error) {
	s, err := scrape(ctx, a.addr)
	if err != nil {
		return allocSnap{}, err
	}
	return allocSnap{
		objs:  sum(s, "go_memstats_mallocs_total", nil),
		bytes: sum(s, "go_memstats_alloc_bytes_total", nil),
	}, nil
}

// calibrate measures what one scrape allocates (the median of a few).
func (a *allocCounter) calibrate(ctx context.Context) error {
	var objs, bytes []float64
	prev, err := a.snap(ctx)
	if err != nil {
		return err
	}
	for range 7 {
		cur, err := a.snap(ctx)
		if err != nil {
			return err
		}
		objs, bytes = append(objs, cur.objs-prev.objs), append(bytes, cur.bytes-prev.bytes)
		prev = cur
	}
	a.scrapeObjs, a.scrapeB = medianF(objs), medianF(bytes)
	return nil
}

// perCall returns allocations and bytes per call between two snapshots.
func (a *allocCounter) perCall(before, after allocSnap, calls int) (objs, bytes float64) {
	if calls == 0 {
		return 0, 0
	}
	return (after.objs - before.objs - a.scrapeObjs) / float64(calls),
		(after.bytes - before.bytes - a.scrapeB) / float64(calls)
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
