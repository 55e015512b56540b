// Package deploy holds no code: its tests check the files operators deploy
// (Prometheus rules, Grafana dashboard, Kubernetes and OpenShift manifests)
// against the binary they go with.
package deploy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/metrics"
	"github.com/cri-mirror-proxy/cri-mirror-proxy/resolver"
)

// ruleFile is a Prometheus rule file (rule_files in prometheus.yml).
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	promDuration   = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	templateLabel  = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	legendLabel    = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	labelValuesVar = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
)

func TestAlertRules(t *testing.T) {
	fams := exported(t)
	data, err := os.ReadFile(filepath.Join("prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt key (annotation, expr) would be ignored by a lax reader
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	if len(rf.Groups) == 0 {
		t.Fatal("alerts.yaml has no groups")
	}
	var alerts []string
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: a group needs a name and rules", g.Name)
		}
		for i, r := range g.Rules {
			where := fmt.Sprintf("alerts.yaml %s rule %d (%s)", g.Name, i, r.Alert+r.Record)
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("%s: set exactly one of alert and record", where)
			}
			if slices.Contains(alerts, r.Alert) {
				t.Errorf("%s: alert name used twice", where)
			}
			alerts = append(alerts, r.Alert)
			for _, d := range []string{r.For, r.KeepFiringFor} {
				if d != "" && !promDuration.MatchString(d) {
					t.Errorf("%s: %q is not a Prometheus duration", where, d)
				}
			}
			result := checkExpr(t, fams, where, r.Expr)
			if r.Alert == "" {
				continue
			}
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity %q, want critical, warning or info", where, s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			for _, text := range r.Annotations {
				for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
					if !slices.Contains(result, m[1]) {
						t.Errorf("%s: annotation uses $labels.%s, which the alert does not carry (it has %v)", where, m[1], result)
					}
				}
			}
		}
	}
	// The alerts an operator relies on are all there.
	for _, want := range []string{
		"CRIMirrorProxyDown", "CRIMirrorRuntimeUnavailable", "CRIMirrorMirrorFailing", "CRIMirrorMirrorDown",
		"CRIMirrorFallbackRateHigh", "CRIMirrorSourceContactedUnderNeverContactSource", "CRIMirrorConfigReloadFailed",
		"CRIMirrorTagStale", "CRIMirrorTagChanged",
	} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alerts.yaml lacks alert %s", want)
		}
	}
}

// panel is the part of a Grafana panel the test reads.
type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		Datasource   *struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func TestDashboard(t *testing.T) {
	fams := exported(t)
	data, err := os.ReadFile(filepath.Join("grafana", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard needs title, uid and schemaVersion: %q %q %d", d.Title, d.UID, d.SchemaVersion)
	}

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Errorf("variable %s: query is neither an object nor a string", v.Name)
			}
		}
		if v.Definition != q.Query {
			t.Errorf("variable %s: definition %q differs from query %q", v.Name, v.Definition, q.Query)
		}
		m := labelValuesVar.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(METRIC, LABEL)", v.Name, q.Query)
			continue
		}
		where := "variable " + v.Name
		checkExpr(t, fams, where, m[1])
		a, _ := analyze(m[1])
		for _, s := range a.selectors {
			if labels, _ := labelsOf(fams, s.metric); !slices.Contains(labels, m[2]) {
				t.Errorf("%s: %s has no label %q", where, s.metric, m[2])
			}
		}
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: panels must not be tied to one Prometheus")
	}
	// Every Prometheus data source reference, in panels, targets and
	// variables alike, goes through the variable.
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		t.Fatal(err)
	}
	var datasources func(v any)
	datasources = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if ds, ok := c.(map[string]any); ok && k == "datasource" && ds["type"] == "prometheus" && ds["uid"] != "${datasource}" {
					t.Errorf("data source %v is not ${datasource}", ds)
				}
				datasources(c)
			}
		case []any:
			for _, c := range v {
				datasources(c)
			}
		}
	}
	datasources(generic)

	ids := map[int]bool{}
	var used []string
	var boxes []panel
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if p.ID == 0 || ids[p.ID] {
				t.Errorf("%s: id missing or repeated", where)
			}
			ids[p.ID] = true
			if p.Title == "" {
				t.Errorf("%s: no title", where)
			}
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v is outside the 24-column grid", where, g)
			}
			boxes = append(boxes, p)
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Description == "" {
				t.Errorf("%s: no description", where)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource must be ${datasource}", where)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: refId missing or repeated", where)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: target datasource must be ${datasource}", where)
				}
				for _, v := range regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`).FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
						t.Errorf("%s: query uses $%s, which is not a dashboard variable", where, v[1])
					}
				}
				result := checkExpr(t, fams, where, tg.Expr)
				for _, m := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
					if !slices.Contains(result, m[1]) {
						t.Errorf("%s: legend uses {{%s}}, which the query result does not carry (it has %v)", where, m[1], result)
					}
				}
				if a, err := analyze(tg.Expr); err == nil {
					used = append(used, a.metrics()...)
				}
			}
		}
	}
	walk(d.Panels)
	for i, a := range boxes {
		for _, b := range boxes[i+1:] {
			ga, gb := a.GridPos, b.GridPos
			if ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H {
				t.Errorf("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}

	// Every family of the proxy shows on the dashboard, and the CRI ones.
	for _, name := range metrics.Names() {
		if !strings.HasPrefix(name, "cri_mirror_") && name != "grpc_server_handled_total" && name != "grpc_server_handling_seconds" {
			continue
		}
		if !slices.ContainsFunc(used, func(u string) bool { return u == name || strings.TrimSuffix(u, "_bucket") == name }) {
			t.Errorf("the dashboard does not show %s", name)
		}
	}
}

// manifest is one YAML document of a Kubernetes manifest file.
type manifest struct {
	file string
	node yaml.Node
	head struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string            `yaml:"name"`
			Namespace string            `yaml:"namespace"`
			Labels    map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
	}
}

func (m *manifest) decode(t *testing.T, v any) {
	t.Helper()
	if err := m.node.Decode(v); err != nil {
		t.Fatalf("%s %s/%s: %v", m.file, m.head.Kind, m.head.Metadata.Name, err)
	}
}

// manifests reads every document of the files matching pattern.
func manifests(t *testing.T, pattern string) []*manifest {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	var out []*manifest
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			m := &manifest{file: fmt.Sprintf("%s#%d", f, i)}
			err := dec.Decode(&m.node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", m.file, err)
			}
			if len(m.node.Content) == 0 || m.node.Content[0].Tag == "!!null" {
				continue
			}
			m.decode(t, &m.head)
			out = append(out, m)
		}
	}
	return out
}

func TestManifestsAreObjects(t *testing.T) {
	all := append(manifests(t, filepath.Join("kubernetes", "*.yaml")), manifests(t, filepath.Join("openshift", "*.yaml"))...)
	namespaces := map[string]bool{}
	for _, m := range all {
		if m.head.Kind == "Namespace" {
			namespaces[m.head.Metadata.Name] = true
		}
	}
	for _, m := range all {
		h := m.head
		if h.APIVersion == "" || h.Kind == "" || h.Metadata.Name == "" {
			t.Errorf("%s: apiVersion %q, kind %q, metadata.name %q: all are required", m.file, h.APIVersion, h.Kind, h.Metadata.Name)
		}
		if h.Metadata.Namespace != "" && !namespaces[h.Metadata.Namespace] {
			t.Errorf("%s: namespace %q is not created by these manifests", m.file, h.Metadata.Namespace)
		}
	}
}

// Minimal apps/v1 DaemonSet and core/v1 types: the fields the checks read.
type (
	volumeMount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	}
	container struct {
		Name            string        `yaml:"name"`
		Image           string        `yaml:"image"`
		Command         []string      `yaml:"command"`
		VolumeMounts    []volumeMount `yaml:"volumeMounts"`
		SecurityContext struct {
			Privileged bool `yaml:"privileged"`
		} `yaml:"securityContext"`
	}
	volume struct {
		Name     string `yaml:"name"`
		HostPath *struct {
			Path string `yaml:"path"`
			Type string `yaml:"type"`
		} `yaml:"hostPath"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
	}
	daemonSet struct {
		Metadata struct {
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Template struct {
				Metadata struct {
					Labels map[string]string `yaml:"labels"`
				} `yaml:"metadata"`
				Spec struct {
					ServiceAccountName string      `yaml:"serviceAccountName"`
					HostPID            bool        `yaml:"hostPID"`
					InitContainers     []container `yaml:"initContainers"`
					Containers         []container `yaml:"containers"`
					Volumes            []volume    `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	configMap struct {
		Data map[string]string `yaml:"data"`
	}
)

const imagePlaceholder = "ghcr.io/OWNER/cri-mirror-proxy:VERSION"

// kubernetesFiles returns the objects of deploy/kubernetes by kind/name.
func kubernetesFiles(t *testing.T) map[string]*manifest {
	t.Helper()
	out := map[string]*manifest{}
	for _, m := range manifests(t, filepath.Join("kubernetes", "*.yaml")) {
		out[m.head.Kind+"/"+m.head.Metadata.Name] = m
	}
	return out
}

func TestDaemonSet(t *testing.T) {
	objs := kubernetesFiles(t)
	dsm := objs["DaemonSet/cri-mirror-proxy"]
	if dsm == nil {
		t.Fatalf("no DaemonSet/cri-mirror-proxy in deploy/kubernetes (have %v)", keys(objs))
	}
	var ds daemonSet
	dsm.decode(t, &ds)
	spec := ds.Spec.Template.Spec

	if len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Error("the selector matches nothing")
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels %v", k, v, ds.Spec.Template.Metadata.Labels)
		}
	}
	if sa := spec.ServiceAccountName; sa != "" && objs["ServiceAccount/"+sa] == nil {
		t.Errorf("serviceAccountName %q is not defined", sa)
	}
	if !spec.HostPID {
		t.Error("hostPID is needed for nsenter --target 1")
	}

	volumes := map[string]volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			t.Errorf("volume %q defined twice", v.Name)
		}
		volumes[v.Name] = v
		if v.HostPath != nil && (!path.IsAbs(v.HostPath.Path) || path.Clean(v.HostPath.Path) != v.HostPath.Path) {
			t.Errorf("volume %q: hostPath %q is not a clean absolute path", v.Name, v.HostPath.Path)
		}
		if v.ConfigMap != nil && objs["ConfigMap/"+v.ConfigMap.Name] == nil {
			t.Errorf("volume %q: ConfigMap %q is not defined", v.Name, v.ConfigMap.Name)
		}
	}
	mounted := map[string]bool{}
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	if len(spec.Containers) == 0 || len(spec.InitContainers) == 0 {
		t.Error("want an init container that installs and a container that stays")
	}
	for _, c := range all {
		where := "container " + c.Name
		if c.Image != imagePlaceholder {
			t.Errorf("%s: image %q, want the placeholder %s", where, c.Image, imagePlaceholder)
		}
		if !c.SecurityContext.Privileged {
			t.Errorf("%s: nsenter into the host needs privileged", where)
		}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("%s: mounts volume %q, which is not defined", where, vm.Name)
			}
			if !path.IsAbs(vm.MountPath) {
				t.Errorf("%s: mountPath %q is not absolute", where, vm.MountPath)
			}
			mounted[vm.Name] = true
		}
		// The script a container runs is a key of a mounted ConfigMap.
		if len(c.Command) > 1 && strings.HasPrefix(c.Command[1], "/") {
			if !scriptMounted(objs, volumes, c, c.Command[1]) {
				t.Errorf("%s: runs %s, which no mounted ConfigMap provides", where, c.Command[1])
			}
		}
	}
	for name := range volumes {
		if !mounted[name] {
			t.Errorf("volume %q is mounted by no container", name)
		}
	}
}

func scriptMounted(objs map[string]*manifest, volumes map[string]volume, c container, file string) bool {
	for _, vm := range c.VolumeMounts {
		v := volumes[vm.Name]
		rel, ok := strings.CutPrefix(file, vm.MountPath+"/")
		if !ok || v.ConfigMap == nil || objs["ConfigMap/"+v.ConfigMap.Name] == nil {
			continue
		}
		var cm configMap
		if err := objs["ConfigMap/"+v.ConfigMap.Name].node.Decode(&cm); err == nil && cm.Data[rel] != "" {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkRules loads a registries.conf drop-in as the proxy's only rules.
func checkRules(t *testing.T, data []byte) error {
	t.Helper()
	dir := t.TempDir()
	main := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(main, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	confD := filepath.Join(dir, "registries.conf.d")
	if err := os.Mkdir(confD, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confD, "50-rules.conf"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return resolver.Check(main, confD)
}

func TestConfigMapRules(t *testing.T) {
	m := kubernetesFiles(t)["ConfigMap/cri-mirror-proxy"]
	if m == nil {
		t.Fatal("no ConfigMap/cri-mirror-proxy")
	}
	var cm configMap
	m.decode(t, &cm)
	rules := cm.Data["50-cri-mirror-proxy.conf"]
	if rules == "" {
		t.Fatal("the ConfigMap has no 50-cri-mirror-proxy.conf")
	}
	if err := checkRules(t, []byte(rules)); err != nil {
		t.Errorf("the ConfigMap's rules are refused by the proxy: %v", err)
	}
}

// dataURL decodes an RFC 2397 data: URL as Ignition reads it.
func dataURL(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, "data:")
	if !ok {
		return nil, fmt.Errorf("%.40q is not a data: URL", s)
	}
	header, payload, ok := strings.Cut(rest, ",")
	if !ok {
		return nil, errors.New("data: URL without a comma")
	}
	if strings.HasSuffix(header, ";base64") {
		return base64.StdEncoding.DecodeString(payload)
	}
	v, err := url.PathUnescape(payload)
	return []byte(v), err
}

func TestDataURL(t *testing.T) {
	for in, want := range map[string]string{
		"data:,a%20b%0A": "a b\n",
		"data:text/plain;charset=utf-8;base64,eA==": "x",
	} {
		if got, err := dataURL(in); err != nil || string(got) != want {
			t.Errorf("dataURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := dataURL("https://example.com/x"); err == nil {
		t.Error("dataURL accepted an https URL")
	}
}

// machineConfig is machineconfiguration.openshift.io/v1 MachineConfig with
// the Ignition 3.2 fields the example uses.
type machineConfig struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Config struct {
			Ignition struct {
				Version string `yaml:"version"`
			} `yaml:"ignition"`
			Storage struct {
				Files []struct {
					Path      string `yaml:"path"`
					Mode      *int   `yaml:"mode"`
					Overwrite *bool  `yaml:"overwrite"`
					Contents  struct {
						Source string `yaml:"source"`
					} `yaml:"contents"`
				} `yaml:"files"`
			} `yaml:"storage"`
			Systemd struct {
				Units []struct {
					Name     string `yaml:"name"`
					Enabled  *bool  `yaml:"enabled"`
					Contents string `yaml:"contents"`
				} `yaml:"units"`
			} `yaml:"systemd"`
		} `yaml:"config"`
	} `yaml:"spec"`
}

func TestMachineConfig(t *testing.T) {
	var found bool
	for _, m := range manifests(t, filepath.Join("openshift", "*.yaml")) {
		if m.head.Kind != "MachineConfig" {
			continue
		}
		found = true
		if m.head.APIVersion != "machineconfiguration.openshift.io/v1" {
			t.Errorf("%s: apiVersion %q", m.file, m.head.APIVersion)
		}
		var mc machineConfig
		m.decode(t, &mc)
		if mc.Metadata.Labels["machineconfiguration.openshift.io/role"] == "" {
			t.Errorf("%s: no machineconfiguration.openshift.io/role label: no pool picks it up", m.file)
		}
		if v := mc.Spec.Config.Ignition.Version; !regexp.MustCompile(`^3\.[2-4]\.0$`).MatchString(v) {
			t.Errorf("%s: ignition.version %q, want 3.2.0 (or a later 3.x the MCO accepts)", m.file, v)
		}
		files := map[string][]byte{}
		for _, f := range mc.Spec.Config.Storage.Files {
			where := m.file + " " + f.Path
			if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
				t.Errorf("%s: not a clean absolute path", where)
			}
			if _, dup := files[f.Path]; dup {
				t.Errorf("%s: written twice", where)
			}
			if f.Mode == nil || *f.Mode < 0 || *f.Mode > 0o7777 {
				t.Errorf("%s: mode must be set, in decimal (420 for 0644)", where)
			}
			if f.Overwrite == nil || !*f.Overwrite {
				t.Errorf("%s: overwrite: true, or a second apply fails on the existing file", where)
			}
			data, err := dataURL(f.Contents.Source)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			files[f.Path] = data
		}

		var rulesDir string
		for p, data := range files {
			switch {
			case strings.HasSuffix(p, ".conf") && strings.Contains(p, "registries.conf.d/"):
				rulesDir = path.Dir(p)
				if err := checkRules(t, data); err != nil {
					t.Errorf("%s %s: the proxy refuses these rules: %v", m.file, p, err)
				}
			case strings.HasPrefix(p, "/etc/systemd/system/") && strings.HasSuffix(p, ".service"):
				unit := string(data)
				for _, want := range []string{"[Unit]", "[Service]", "ExecStart=", "[Install]", "WantedBy=", imagePlaceholder} {
					if !strings.Contains(unit, want) {
						t.Errorf("%s %s: unit lacks %q", m.file, p, want)
					}
				}
			}
		}
		if rulesDir == "" {
			t.Errorf("%s: writes no registries.conf.d drop-in", m.file)
		}
		for _, u := range mc.Spec.Config.Systemd.Units {
			unit, ok := files["/etc/systemd/system/"+u.Name]
			if !ok && u.Contents == "" {
				t.Errorf("%s: unit %s is neither written nor given contents", m.file, u.Name)
			}
			if u.Enabled == nil || !*u.Enabled {
				t.Errorf("%s: unit %s is not enabled", m.file, u.Name)
			}
			if rulesDir != "" && !strings.Contains(string(unit)+u.Contents, "--registries-conf-dir "+rulesDir) {
				t.Errorf("%s: unit %s does not read the rules in %s", m.file, u.Name, rulesDir)
			}
		}
	}
	if !found {
		t.Fatal("no MachineConfig in deploy/openshift")
	}
}

// TestPromtool runs Prometheus's own checks when promtool is installed
// (Debian package prometheus): the rule file's syntax and the alert unit
// tests in alerts_test.yaml. The checks above do not need it.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed")
	}
	for _, args := range [][]string{
		{"check", "rules", "alerts.yaml"},
		{"test", "rules", "alerts_test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
