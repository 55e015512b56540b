package mirrorsets

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parse reads the objects in data, a YAML (or JSON) stream as `oc get -o
// yaml` or a manifest directory holds: one or more documents separated by
// "---", each an object or a list (kind: List, or a typed list such as
// ImageTagMirrorSetList) with items. name is used in messages.
//
// Mirror-set objects are checked as the API server and the
// machine-config-operator would check them, and more strictly in one way:
// an unknown field in spec is an error, since a misspelt mirrorSourcePolicy
// silently means "contact the source". Every problem found is reported,
// each as an *ObjectError naming the file, line, object and field; the
// objects that are valid are returned alongside the error. Objects of other
// kinds are returned with Supported() false, for Merge to mention.
func Parse(name string, data []byte) ([]Object, error) {
	p := &parser{file: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// yaml's own messages carry the line: "yaml: line 7: ...".
			p.errs = append(p.errs, fmt.Errorf("%s: %w", name, err))
			break
		}
		for _, n := range doc.Content {
			p.object(n, "", "")
		}
	}
	// Report in file order: fields are checked before values, and an
	// operator reads the file top to bottom.
	slices.SortStableFunc(p.errs, func(a, b error) int { return errorLine(a) - errorLine(b) })
	return p.objs, errors.Join(p.errs...)
}

// errorLine is the line an error points at, 0 for a YAML syntax error.
func errorLine(err error) int {
	var oe *ObjectError
	if errors.As(err, &oe) {
		return oe.Line
	}
	return 0
}

type parser struct {
	file string
	objs []Object
	errs []error
}

// envelope is what every Kubernetes object and list has in common.
type envelope struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	// yaml.Node values (not pointers) receive the raw nodes.
	Spec  yaml.Node   `yaml:"spec"`
	Items []yaml.Node `yaml:"items"`
}

// object reads one document or list item. apiVersion and kind are the
// defaults a typed list gives its items, which the API server sends without
// their own.
func (p *parser) object(n *yaml.Node, apiVersion, kind string) {
	n = deref(n)
	if isNull(n) {
		return // an empty document, e.g. a trailing "---"
	}
	if n.Kind != yaml.MappingNode {
		p.fail(n.Line, "", "", "not a Kubernetes object (want a mapping with apiVersion and kind)")
		return
	}
	var env envelope
	if err := n.Decode(&env); err != nil {
		p.fail(n.Line, "", "", yamlMessage(err))
		return
	}
	if env.APIVersion == "" {
		env.APIVersion = apiVersion
	}
	if env.Kind == "" {
		env.Kind = kind
	}
	if env.Kind == "" {
		p.fail(n.Line, "", "kind", "required")
		return
	}

	if env.Kind == "List" || (strings.HasSuffix(env.Kind, "List") && env.Items != nil) {
		// A typed list (ImageTagMirrorSetList) implies its items' kind and
		// version; a v1 List's items carry their own.
		itemVersion, itemKind := "", ""
		if env.Kind != "List" {
			itemVersion, itemKind = env.APIVersion, strings.TrimSuffix(env.Kind, "List")
		}
		for i := range env.Items {
			p.object(&env.Items[i], itemVersion, itemKind)
		}
		return
	}

	k, ok := knownKind(env.Kind)
	if !ok {
		p.objs = append(p.objs, Object{
			APIVersion: env.APIVersion, Kind: Kind(env.Kind), Name: env.Metadata.Name,
			File: p.file, Line: n.Line,
		})
		return
	}
	o := Object{APIVersion: env.APIVersion, Kind: k, Name: env.Metadata.Name, File: p.file, Line: n.Line}
	before := len(p.errs)
	fail := func(line int, field, msg string) {
		p.fail(line, o.label(), field, msg)
	}
	if env.APIVersion != k.apiVersion() {
		fail(n.Line, "apiVersion", fmt.Sprintf("%q: %s is %s", env.APIVersion, k, k.apiVersion()))
	}
	if msg := checkName(o.Name); msg != "" {
		fail(n.Line, "metadata.name", msg)
	}
	if spec := deref(&env.Spec); spec.Kind == 0 || isNull(spec) {
		fail(n.Line, "spec", "required")
	} else {
		o.Entries = p.entries(k, spec, fail)
	}
	if len(p.errs) == before {
		p.objs = append(p.objs, o)
	}
}

// label names an object in messages, even one without a name.
func (o Object) label() string {
	if o.Name == "" {
		return string(o.Kind)
	}
	return o.String()
}

// entries reads spec strictly: only the kind's list field, and in each
// entry only the fields the kind has.
func (p *parser) entries(k Kind, spec *yaml.Node, fail func(line int, field, msg string)) []Entry {
	if spec.Kind != yaml.MappingNode {
		fail(spec.Line, "spec", "must be a mapping")
		return nil
	}
	listField := k.specField()
	var list *yaml.Node
	for i := 0; i+1 < len(spec.Content); i += 2 {
		key, val := spec.Content[i], deref(spec.Content[i+1])
		if key.Value != listField {
			fail(key.Line, "spec."+key.Value, fmt.Sprintf("unknown field (%s has only spec.%s)", k, listField))
			continue
		}
		list = val
	}
	if list == nil || isNull(list) {
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		fail(list.Line, "spec."+listField, "must be a list")
		return nil
	}

	allowed := []string{"source", "mirrors", "mirrorSourcePolicy"}
	if k == ImageContentSourcePolicy {
		allowed = allowed[:2]
	}
	var out []Entry
	for i, item := range list.Content {
		item = deref(item)
		field := fmt.Sprintf("spec.%s[%d]", listField, i)
		if item.Kind != yaml.MappingNode {
			fail(item.Line, field, "must be a mapping with source and mirrors")
			continue
		}
		var e Entry
		lines := entryLines{entry: item.Line, source: item.Line, policy: item.Line}
		for j := 0; j+1 < len(item.Content); j += 2 {
			key, val := item.Content[j], deref(item.Content[j+1])
			f := field + "." + key.Value
			switch {
			case !slices.Contains(allowed, key.Value):
				fail(key.Line, f, fmt.Sprintf("unknown field (allowed: %s)", strings.Join(allowed, ", ")))
			case key.Value == "source":
				lines.source = val.Line
				e.Source, _ = p.str(val, f, fail)
			case key.Value == "mirrorSourcePolicy":
				lines.policy = val.Line
				s, _ := p.str(val, f, fail)
				e.MirrorSourcePolicy = MirrorSourcePolicy(s)
			case key.Value == "mirrors":
				if isNull(val) {
					continue
				}
				if val.Kind != yaml.SequenceNode {
					fail(val.Line, f, "must be a list")
					continue
				}
				for m, mn := range val.Content {
					mn = deref(mn)
					s, ok := p.str(mn, fmt.Sprintf("%s[%d]", f, m), fail)
					if ok {
						e.Mirrors = append(e.Mirrors, s)
						lines.mirrors = append(lines.mirrors, mn.Line)
					}
				}
			}
		}
		validateEntry(k, field, e, lines, fail)
		out = append(out, e)
	}
	return out
}

// str reads a string scalar. Numbers and booleans are refused as the API
// server refuses them for a string field.
func (p *parser) str(n *yaml.Node, field string, fail func(line int, field, msg string)) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		if isNull(n) {
			fail(n.Line, field, "required")
		} else {
			fail(n.Line, field, "must be a string")
		}
		return "", false
	}
	return n.Value, true
}

func (p *parser) fail(line int, object, field, msg string) {
	p.errs = append(p.errs, &ObjectError{File: p.file, Line: line, Object: object, Field: field, Msg: msg})
}

// deref follows YAML aliases (*anchor) to the node they stand for.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// yamlMessage drops the "yaml: " prefix; the caller adds file and line.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
