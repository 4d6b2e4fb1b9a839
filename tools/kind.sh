#!/usr/bin/env bash
# make kind: paysaga on a kind cluster, through its ingress. Needs Docker (or
# another engine kind supports) and internet access for the images; kind
# itself is built from the Go module proxy like the other tools.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/tools/versions.env"
bin="$root/.tools/bin"
cluster=${KIND_CLUSTER:-paysaga}
image="paysaga:0.1.0"

command -v docker >/dev/null || { echo "make kind needs a container engine (docker)"; exit 1; }
if [ ! -x "$bin/kind" ]; then
  GOBIN="$bin" GOTOOLCHAIN=local go install "sigs.k8s.io/kind@v$KIND_VERSION"
fi

# Read whole before grep: with pipefail, grep -q stopping early could fail the pipe.
clusters=$("$bin/kind" get clusters 2>/dev/null)
grep -qx "$cluster" <<<"$clusters" || "$bin/kind" create cluster --name "$cluster" --config "$root/kind-config.yaml"
docker build -t "$image" "$root"
"$bin/kind" load docker-image "$image" --name "$cluster"

# Traefik: a maintained ingress controller (ingress-nginx was retired in
# 2026) with a Helm chart and a kind-friendly hostPort mode.
"$bin/helm" repo add traefik https://traefik.github.io/charts >/dev/null 2>&1 || true
"$bin/helm" repo update traefik >/dev/null
"$bin/helm" upgrade --install traefik traefik/traefik ${TRAEFIK_CHART_VERSION:+--version "$TRAEFIK_CHART_VERSION"} \
  --namespace traefik --create-namespace --wait \
  --set ports.web.hostPort=80 --set ports.websecure.hostPort=443 \
  --set service.type=ClusterIP --set "nodeSelector.ingress-ready=true" \
  --set ingressClass.isDefaultClass=true

"$bin/kubectl" create namespace paysaga --dry-run=client -o yaml | "$bin/kubectl" apply -f -
# The demo accounts, and ten for k6 (k6/load.js pays from load-0 … load-9 with USERS=10).
load_accounts=$(for i in $(seq 0 9); do printf ',load-%s:EUR:1000000000000' "$i"; done)
"$bin/helm" upgrade --install paysaga "$root/charts/paysaga" --namespace paysaga --wait --timeout 10m \
  --set-string "worker.seedAccounts=alice:EUR:1000000\,bob:USD:500000${load_accounts//,/\\,}"
"$bin/helm" test paysaga --namespace paysaga
# The ingress serves HTTPS with a certificate the chart signed for localhost:
# clients trust the chart's CA.
ca="$root/.tools/kind-ingress-ca.crt"
"$bin/kubectl" -n paysaga get secret paysaga-ingress-tls -o jsonpath='{.data.ca\.crt}' | base64 -d > "$ca"

cat <<MSG

paysaga runs on kind cluster '$cluster'.
  API     : https://localhost/v1/payments (the chart's CA: $ca)
  curl    : curl --cacert $ca https://localhost/v1/payments
  k6      : SSL_CERT_FILE=$ca $bin/k6 run -e BASE_URL=https://localhost -e USERS=10 -e RATE=5 -e DURATION=2m k6/load.js
  kubectl : kubectl --context kind-$cluster -n paysaga get payments -w
MSG
