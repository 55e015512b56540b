#!/usr/bin/env bash
# Installs what the real-parts tests need, idempotently:
#   apt:  containerd runc docker-registry prometheus systemd busybox-static (and make, curl, iproute2)
#         (only when a command or package is missing)
#         conmon containernetworking-plugins libseccomp-dev pkg-config (CRI-O's, see below)
#   go:   crane, crictl, critest, kubelet   (into test/.bin, only when missing or of another version)
#         crio and pinns, built from github.com/cri-o/cri-o (the second runtime under test)
# Usage: bash test/tools.sh        (root on Debian 12; Go on PATH or at /usr/local/go/bin)
# Prints the tools directory on the last line; `export PATH="$(bash test/tools.sh | tail -1):$PATH"`.
set -euo pipefail

: "${CRI_TOOLS_VERSION:=v1.37.0}"
: "${CRANE_VERSION:=v0.22.1}"
: "${CRIO_VERSION:=v1.34.0}"
: "${KUBE_VERSION:=v1.34.4}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=${TOOLS_BIN:-$here/.bin}
mkdir -p "$bin"
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "tools.sh: go not found (expected on PATH or /usr/local/go/bin)" >&2; exit 1; }

log() { printf 'tools.sh: %s\n' "$*" >&2; }

# --- apt packages -----------------------------------------------------------------------------
# containerd, runc and docker-registry are the real parts under test; make and curl drive the
# tests (`make test`, health checks in test/lib.sh) and may be missing on a minimal Debian;
# promtool (Debian package prometheus) checks the alert rules in deploy/prometheus;
# systemd-analyze (Debian package systemd; systemd need not be running) checks the unit files;
# busybox-static is the shell and tools of the container image (make image) and of the images
# critest's runtime specs run; ip (iproute2) deletes the bridge of their pod network.
missing=()
for cmd_pkg in containerd:containerd runc:runc docker-registry:docker-registry make:make curl:curl promtool:prometheus systemd-analyze:systemd ip:iproute2; do
  command -v "${cmd_pkg%%:*}" >/dev/null || missing+=("${cmd_pkg#*:}")
done
# CRI-O (built below) runs containers through conmon and runc, sets up pod networks with the CNI
# plugins, and links libseccomp.
for pkg in conmon containernetworking-plugins libseccomp-dev pkg-config; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
# The image needs the static busybox (/bin/busybox), not Debian's dynamic one of the same name.
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || { log "need root to apt-get install ${missing[*]}"; exit 1; }
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start system services; the tests run their own instances with their own
# config and sockets, so the system ones are not needed (and the registry would hold :5000);
# prometheus comes only for promtool.
for svc in docker-registry containerd prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    log "stopping system service $svc (the tests start their own)"
    systemctl stop "$svc" || true
  fi
done

# --- go-installed tools -----------------------------------------------------------------------
# A stamp file per tool records the version it was built from, so a version bump rebuilds.
stamp_ok() { [[ -x $bin/$1 && -f $bin/.$1.version && $(cat "$bin/.$1.version") == "$2" ]]; }

if ! stamp_ok crane "$CRANE_VERSION"; then
  log "go install crane@$CRANE_VERSION"
  GOBIN=$bin go install "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
  echo "$CRANE_VERSION" >"$bin/.crane.version"
fi
if ! stamp_ok crictl "$CRI_TOOLS_VERSION"; then
  log "go install crictl@$CRI_TOOLS_VERSION"
  GOBIN=$bin go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRI_TOOLS_VERSION"
  echo "$CRI_TOOLS_VERSION" >"$bin/.crictl.version"
fi
if ! stamp_ok critest "$CRI_TOOLS_VERSION"; then
  # critest is the test binary of cri-tools' cmd/critest package. The module cache copy is
  # read-only and has no vendor/ directory, so build from a writable copy with -mod=mod.
  log "building critest from sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION"
  go mod download "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION"
  src=$(go env GOMODCACHE)/sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src" "$work/cri-tools" && chmod -R u+w "$work/cri-tools"
  (cd "$work/cri-tools" && go test -mod=mod -c -o "$bin/critest" ./cmd/critest)
  echo "$CRI_TOOLS_VERSION" >"$bin/.critest.version"
fi
if ! stamp_ok kubelet "$KUBE_VERSION"; then
  # kubelet for the e2e with a real kubelet (test/e2e/kubelet_test.go). k8s.io/kubernetes's
  # go.mod replaces every k8s.io/* staging module with ./staging/..., which its module zip
  # does not hold: drop those replaces and require the published modules of the same release
  # (v0.X.Y for v1.X.Y). Several minutes of CPU; cached by the version stamp.
  log "building kubelet from k8s.io/kubernetes@$KUBE_VERSION (several minutes)"
  go mod download "k8s.io/kubernetes@$KUBE_VERSION"
  src=$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION
  kwork=$(mktemp -d)
  trap 'rm -rf "$kwork" ${work:+"$work"}' EXIT
  cp -r "$src" "$kwork/kubernetes" && chmod -R u+w "$kwork/kubernetes"
  (
    cd "$kwork/kubernetes"
    for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' go.mod); do
      go mod edit -dropreplace="$m" -require="$m@v0${KUBE_VERSION#v1}"
    done
    GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
      -ldflags "-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" -o "$bin/kubelet" ./cmd/kubelet
  )
  rm -rf "$kwork"
  echo "$KUBE_VERSION" >"$bin/.kubelet.version"
fi

if ! stamp_ok crio "$CRIO_VERSION" || [[ ! -x $bin/pinns ]]; then
  # CRI-O is built from its module as its Makefile would, minus what needs more C libraries:
  # the openpgp tag replaces gpgme, btrfs and ostree are left out. pinns is its C helper,
  # without which it does not start. About 3 minutes and 1 GB of memory on 2 CPUs.
  log "building crio and pinns from github.com/cri-o/cri-o@$CRIO_VERSION"
  go mod download "github.com/cri-o/cri-o@$CRIO_VERSION"
  src=$(go env GOMODCACHE)/github.com/cri-o/cri-o@$CRIO_VERSION
  crio_work=$(mktemp -d)
  trap 'rm -rf "${work:-}" "$crio_work"' EXIT
  cp -r "$src" "$crio_work/cri-o" && chmod -R u+w "$crio_work/cri-o"
  (cd "$crio_work/cri-o" &&
    go build -trimpath -o "$bin/crio" \
      -tags 'containers_image_ostree_stub exclude_graphdriver_btrfs btrfs_noversion containers_image_openpgp seccomp' \
      ./cmd/crio &&
    make -s -C pinns && cp bin/pinns "$bin/pinns")
  echo "$CRIO_VERSION" >"$bin/.crio.version"
fi

echo "$bin"
