package deploy

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
)

// A small reader for the PromQL in the alert rules and the dashboard: enough
// to find every metric selector with its label matchers and every grouping
// (by, without, on, ignoring, group_left, group_right) with the metrics it
// applies to. It is not a full parser (the Prometheus one pulls in most of
// Prometheus); what it cannot read is an error, so nothing slips through
// unchecked. Syntax proper is promtool's job.

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokPunct    // ( ) { } ,
	tokOp       // = != =~ !~ and arithmetic or comparison operators
	tokRange    // a whole [...] range or subquery
	tokVariable // a Grafana variable such as $job
)

type token struct {
	kind tokKind
	text string
}

func lex(expr string) ([]token, error) {
	var toks []token
	r := []rune(expr)
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '#':
			for i < len(r) && r[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			var b strings.Builder
			for ; j < len(r) && r[j] != c; j++ {
				if r[j] == '\\' && c != '`' && j+1 < len(r) {
					j++
				}
				b.WriteRune(r[j])
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, token{tokString, b.String()})
			i = j + 1
		case c == '[':
			j := i
			for j < len(r) && r[j] != ']' {
				j++
			}
			if j >= len(r) {
				return nil, fmt.Errorf("unterminated [ at %d", i)
			}
			toks = append(toks, token{tokRange, string(r[i : j+1])})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(r) && r[j] == '{' {
				for j < len(r) && r[j] != '}' {
					j++
				}
				j++
			} else {
				for j < len(r) && isIdentRune(r[j]) {
					j++
				}
			}
			toks = append(toks, token{tokVariable, string(r[i:j])})
			i = j
		case isIdentStart(c):
			j := i
			for j < len(r) && isIdentRune(r[j]) {
				j++
			}
			toks = append(toks, token{tokIdent, string(r[i:j])})
			i = j
		case unicode.IsDigit(c) || (c == '.' && i+1 < len(r) && unicode.IsDigit(r[i+1])):
			j := i
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '.' ||
				((r[j] == '+' || r[j] == '-') && (r[j-1] == 'e' || r[j-1] == 'E'))) {
				j++
			}
			toks = append(toks, token{tokNumber, string(r[i:j])})
			i = j
		case strings.ContainsRune("(){},", c):
			toks = append(toks, token{tokPunct, string(c)})
			i++
		default:
			j := i + 1
			if j < len(r) && strings.ContainsRune("=~", r[j]) && strings.ContainsRune("=!<>", c) {
				j++
			}
			op := string(r[i:j])
			if !slices.Contains([]string{"=", "==", "!=", "=~", "!~", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "@", ":"}, op) {
				return nil, fmt.Errorf("unexpected %q at %d", op, i)
			}
			toks = append(toks, token{tokOp, op})
			i = j
		}
	}
	return toks, nil
}

func isIdentStart(c rune) bool { return c == '_' || c == ':' || unicode.IsLetter(c) }
func isIdentRune(c rune) bool  { return isIdentStart(c) || unicode.IsDigit(c) }

// selector is one metric selector: name{label op "value", ...}.
type selector struct {
	metric string
	labels []string
}

// grouping is a by/without/on/ignoring/group_* label list and the metrics
// of the expression it applies to.
type grouping struct {
	keyword string
	labels  []string
	metrics []string
}

type analysis struct {
	selectors []selector
	groupings []grouping
}

// metrics lists every metric the expression reads.
func (a analysis) metrics() []string {
	var out []string
	for _, s := range a.selectors {
		if !slices.Contains(out, s.metric) {
			out = append(out, s.metric)
		}
	}
	return out
}

// byLabels is the union of the labels of every by grouping.
func (a analysis) byLabels() (labels []string, ok bool) {
	for _, g := range a.groupings {
		switch g.keyword {
		case "by":
			ok = true
			labels = append(labels, g.labels...)
		case "without":
			return nil, false
		}
	}
	return labels, ok
}

// Words that are not metric names when not followed by "(".
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

// Aggregation operators, which may be followed by by/without before "(".
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// analyze reads expr.
func analyze(expr string) (analysis, error) {
	toks, err := lex(expr)
	if err != nil {
		return analysis{}, err
	}
	var a analysis
	// Each open parenthesis collects the metrics read inside it, so that a
	// grouping finds the expression it aggregates.
	stack := [][]string{nil}
	var pendingBy []int // groupings (by index) waiting for the next (...) group
	type frame struct{ waiting []int }
	var frames []frame
	var lastClosed []string // metrics of the group closed last
	addMetric := func(m string) {
		for i := range stack {
			stack[i] = append(stack[i], m)
		}
	}
	next := func(i int) token {
		if i+1 < len(toks) {
			return toks[i+1]
		}
		return token{kind: -1}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch {
		case t.kind == tokIdent && keywords[strings.ToLower(t.text)]:
			kw := strings.ToLower(t.text)
			postfix := i > 0 && toks[i-1].kind == tokPunct && toks[i-1].text == ")"
			switch kw {
			case "by", "without", "on", "ignoring", "group_left", "group_right":
			default:
				continue
			}
			var labels []string
			if n := next(i); n.kind == tokPunct && n.text == "(" {
				j := i + 2
				for ; j < len(toks) && !(toks[j].kind == tokPunct && toks[j].text == ")"); j++ {
					switch {
					case toks[j].kind == tokIdent:
						labels = append(labels, toks[j].text)
					case toks[j].kind == tokPunct && toks[j].text == ",":
					default:
						return a, fmt.Errorf("unexpected %q in %s (...)", toks[j].text, kw)
					}
				}
				i = j
			} else if kw != "group_left" && kw != "group_right" {
				return a, fmt.Errorf("%s without a label list", kw)
			}
			g := grouping{keyword: kw, labels: labels}
			if kw == "by" || kw == "without" {
				// "sum by (x) (expr)" waits for the group that follows;
				// "sum (expr) by (x)" takes the group just closed.
				if postfix {
					g.metrics = lastClosed
				} else {
					pendingBy = append(pendingBy, len(a.groupings))
				}
			}
			a.groupings = append(a.groupings, g)
		case t.kind == tokIdent:
			n := next(i)
			if n.kind == tokPunct && n.text == "(" {
				continue // a function or an aggregation
			}
			if aggregations[strings.ToLower(t.text)] && n.kind == tokIdent && keywords[strings.ToLower(n.text)] {
				continue // sum by (...) (...)
			}
			sel := selector{metric: t.text}
			if n.kind == tokPunct && n.text == "{" {
				labels, end, name, err := matchers(toks, i+1)
				if err != nil {
					return a, fmt.Errorf("%s: %w", t.text, err)
				}
				if name != "" {
					return a, fmt.Errorf("%s: __name__ matcher next to a metric name", t.text)
				}
				sel.labels = labels
				i = end
			}
			a.selectors = append(a.selectors, sel)
			addMetric(sel.metric)
		case t.kind == tokPunct && t.text == "{":
			labels, end, name, err := matchers(toks, i)
			if err != nil {
				return a, err
			}
			if name == "" {
				return a, fmt.Errorf("selector without a metric name")
			}
			a.selectors = append(a.selectors, selector{metric: name, labels: labels})
			addMetric(name)
			i = end
		case t.kind == tokPunct && t.text == "(":
			stack = append(stack, nil)
			frames = append(frames, frame{waiting: pendingBy})
			pendingBy = nil
		case t.kind == tokPunct && t.text == ")":
			if len(stack) < 2 {
				return a, fmt.Errorf("unbalanced )")
			}
			closed := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			f := frames[len(frames)-1]
			frames = frames[:len(frames)-1]
			for _, gi := range f.waiting {
				a.groupings[gi].metrics = closed
			}
			lastClosed = closed
		case t.kind == tokPunct && t.text == "}":
			return a, fmt.Errorf("unbalanced }")
		}
	}
	if len(stack) != 1 {
		return a, fmt.Errorf("unbalanced (")
	}
	if len(pendingBy) > 0 {
		return a, fmt.Errorf("by/without without an expression after it")
	}
	// on/ignoring/group_* match labels of both operands: check them against
	// every metric of the expression.
	for i, g := range a.groupings {
		if g.keyword != "by" && g.keyword != "without" {
			a.groupings[i].metrics = a.metrics()
		}
	}
	return a, nil
}

// matchers reads {label op "value", ...} starting at toks[open] == "{". It
// returns the label names, the index of "}", and the value of a __name__
// equality matcher.
func matchers(toks []token, open int) (labels []string, end int, name string, err error) {
	i := open + 1
	for ; i < len(toks); i++ {
		t := toks[i]
		if t.kind == tokPunct && t.text == "}" {
			return labels, i, name, nil
		}
		if t.kind == tokPunct && t.text == "," {
			continue
		}
		if t.kind != tokIdent && t.kind != tokString {
			return nil, 0, "", fmt.Errorf("unexpected %q in a selector", t.text)
		}
		if i+2 >= len(toks) || toks[i+1].kind != tokOp || toks[i+2].kind != tokString {
			if t.kind == tokString {
				// {"metric_name"}: the name as a quoted string.
				name = t.text
				continue
			}
			return nil, 0, "", fmt.Errorf("label %s is not followed by an operator and a quoted value", t.text)
		}
		switch toks[i+1].text {
		case "=", "!=", "=~", "!~":
		default:
			return nil, 0, "", fmt.Errorf("label %s: operator %q", t.text, toks[i+1].text)
		}
		if t.text == "__name__" {
			if toks[i+1].text != "=" {
				return nil, 0, "", fmt.Errorf("only __name__=\"...\" is understood")
			}
			name = toks[i+2].text
		} else {
			labels = append(labels, t.text)
		}
		i += 2
	}
	return nil, 0, "", fmt.Errorf("unterminated {")
}
