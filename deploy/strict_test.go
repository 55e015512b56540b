package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	ignition "github.com/coreos/ignition/v2/config/v3_2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// documents splits a manifest file into its YAML documents.
func documents(t *testing.T, file string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")) != "" {
			out = append(out, []byte(doc))
		}
	}
	return out
}

// strictDecode decodes YAML into v as the API server's strict field
// validation does: field names match case-sensitively, and unknown or
// duplicate fields are errors.
func strictDecode(doc []byte, v any) error {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// strictObject decodes one document into the Kubernetes API type its kind
// names, strictly.
func strictObject(doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj runtime.Object
	switch tm.GroupVersionKind() {
	case corev1.SchemeGroupVersion.WithKind("Namespace"):
		obj = &corev1.Namespace{}
	case corev1.SchemeGroupVersion.WithKind("ServiceAccount"):
		obj = &corev1.ServiceAccount{}
	case corev1.SchemeGroupVersion.WithKind("ConfigMap"):
		obj = &corev1.ConfigMap{}
	case appsv1.SchemeGroupVersion.WithKind("DaemonSet"):
		obj = &appsv1.DaemonSet{}
	default:
		return nil, fmt.Errorf("%s %s: not a kind this test knows", tm.APIVersion, tm.Kind)
	}
	if err := strictDecode(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// kubernetesObjects strictly decodes every document of deploy/kubernetes.
func kubernetesObjects(t *testing.T) []runtime.Object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes (%v)", err)
	}
	var out []runtime.Object
	for _, f := range files {
		for i, doc := range documents(t, f) {
			obj, err := strictObject(doc)
			if err != nil {
				t.Errorf("%s#%d: %v", f, i, err)
				continue
			}
			out = append(out, obj)
		}
	}
	return out
}

func TestStrictDecodeRefuses(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelt field":  "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      hostPid: true\n",
		"unknown field":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatum: {a: b}\n",
		"duplicate field": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n",
		"unknown kind":    "apiVersion: v1\nkind: Secrets\nmetadata: {name: x}\n",
	} {
		if _, err := strictObject([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestKubernetesManifestsStrict(t *testing.T) {
	daemonSets := map[string]*appsv1.DaemonSet{}
	for _, obj := range kubernetesObjects(t) {
		if ds, ok := obj.(*appsv1.DaemonSet); ok {
			daemonSets[ds.Name] = ds
		}
	}
	install, uninstall := daemonSets["cri-mirror-proxy"], daemonSets["cri-mirror-proxy-uninstall"]
	if install == nil || uninstall == nil {
		t.Fatalf("want the DaemonSets cri-mirror-proxy and cri-mirror-proxy-uninstall, have %v", keys(daemonSets))
	}
	for _, ds := range []*appsv1.DaemonSet{install, uninstall} {
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.HostPath == nil {
				continue
			}
			p := v.HostPath.Path
			// /usr is read-only on image-based systems (Flatcar, Fedora CoreOS).
			if p == "/usr" || strings.HasPrefix(p, "/usr/") {
				t.Errorf("%s: hostPath %s is under /usr", ds.Name, p)
			}
			// CRI-O and Podman read /etc/containers: the rules go elsewhere.
			if p == "/etc/containers" || strings.HasPrefix(p, "/etc/containers/") {
				t.Errorf("%s: hostPath %s: the proxy's rules belong in its own directory", ds.Name, p)
			}
		}
	}

	// The long-running container reports the proxy's readiness.
	var probed bool
	for _, c := range install.Spec.Template.Spec.Containers {
		if p := c.ReadinessProbe; p != nil && p.Exec != nil && slices.Equal(p.Exec.Command, []string{"/bin/sh", "/config/install.sh", "ready"}) {
			probed = true
		}
	}
	if !probed {
		t.Error("no container of the DaemonSet has install.sh ready as its readiness probe")
	}
	var uninstalls bool
	for _, c := range uninstall.Spec.Template.Spec.InitContainers {
		uninstalls = uninstalls || slices.Equal(c.Command, []string{"/bin/sh", "/config/install.sh", "uninstall"})
	}
	if !uninstalls {
		t.Error("the uninstall DaemonSet does not run install.sh uninstall")
	}
}

// machineConfigObject is machineconfiguration.openshift.io/v1 MachineConfig
// with every field of its spec (openshift/api machineconfiguration/v1,
// which the module proxy does not serve at a usable version); the Ignition
// config in spec.config is then parsed by Ignition's own parser.
type machineConfigObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		OSImageURL                     string               `json:"osImageURL,omitempty"`
		BaseOSExtensionsContainerImage string               `json:"baseOSExtensionsContainerImage,omitempty"`
		Config                         runtime.RawExtension `json:"config"`
		KernelArguments                []string             `json:"kernelArguments,omitempty"`
		Extensions                     []string             `json:"extensions,omitempty"`
		FIPS                           bool                 `json:"fips,omitempty"`
		KernelType                     string               `json:"kernelType,omitempty"`
	} `json:"spec"`
}

func TestMachineConfigStrict(t *testing.T) {
	var found int
	for i, doc := range documents(t, filepath.Join("openshift", "machineconfig.yaml")) {
		where := fmt.Sprintf("openshift/machineconfig.yaml#%d", i)
		var mc machineConfigObject
		if err := strictDecode(doc, &mc); err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if mc.Kind != "MachineConfig" || mc.APIVersion != "machineconfiguration.openshift.io/v1" {
			t.Errorf("%s: %s %s", where, mc.APIVersion, mc.Kind)
			continue
		}
		found++
		cfg, report, err := ignition.Parse(mc.Spec.Config.Raw)
		if err != nil || len(report.Entries) > 0 {
			// Ignition only warns about unknown keys: any entry fails here.
			t.Errorf("%s: the Ignition config: %v\n%s", where, err, report)
			continue
		}
		for _, f := range cfg.Storage.Files {
			if strings.HasPrefix(f.Path, "/etc/containers/") {
				t.Errorf("%s: writes %s, which CRI-O reads: the proxy's rules belong in its own directory", where, f.Path)
			}
		}
		var units []string
		for _, u := range cfg.Systemd.Units {
			units = append(units, u.Name)
		}
		if !slices.Contains(units, "cri-mirror-proxy.service") {
			t.Errorf("%s: systemd.units %q lack cri-mirror-proxy.service", where, units)
		}
		raw, _ := json.Marshal(cfg.Storage.Files)
		if !strings.Contains(string(raw), path.Join("/etc/cri-mirror-proxy", "registries.conf.d")) {
			t.Errorf("%s: no rules in /etc/cri-mirror-proxy/registries.conf.d", where)
		}
	}
	if found == 0 {
		t.Fatal("no MachineConfig in openshift/machineconfig.yaml")
	}
}
