#!/usr/bin/env bash
# Falconer end to end on kind (Docker): build both images from the Dockerfiles, load them
# into a kind cluster, install the chart with the default rules and instance, act in a
# pod and check that the alert arrives as a FalcoAlert and an Event.
#
# Needs docker, kind, kubectl and helm on PATH, and the host's kernel headers installed.
# It cannot run on the development machines of this repository (no Docker there): their
# tests run the same steps against the local control plane and node
# (e2e/test_helm_install.py, e2e/test_cluster_sensor.py).
#
#   e2e/kind/run.sh            # create (or reuse) the cluster, run, keep it
#   KEEP=0 e2e/kind/run.sh     # delete the cluster at the end
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER=falconer
NS=falconer-system
VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/falconer/__init__.py")"
SENSOR_IMAGE="falconer.local/sensor:$VERSION"
OPERATOR_IMAGE="falconer.local/operator:$VERSION"
step() { printf '==> %s\n' "$*"; }

step "building $SENSOR_IMAGE and $OPERATOR_IMAGE"
docker build -f "$ROOT/sensor/Dockerfile" -t "$SENSOR_IMAGE" "$ROOT"
docker build -f "$ROOT/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$ROOT"

if ! kind get clusters | grep -qx "$CLUSTER"; then
    step "creating kind cluster $CLUSTER"
    kind create cluster --config "$ROOT/e2e/kind/kind-config.yaml" --wait 120s
fi
trap '[ "${KEEP:-1}" = 1 ] || kind delete cluster --name "$CLUSTER"' EXIT
kubectl config use-context "kind-$CLUSTER"
kind load docker-image --name "$CLUSTER" "$SENSOR_IMAGE" "$OPERATOR_IMAGE"

step "installing the chart (CRDs, operator, default rules, default instance)"
helm upgrade --install falconer "$ROOT/helm/falconer" --namespace "$NS" --create-namespace --wait \
    --set image.repository=falconer.local/operator --set image.pullPolicy=Never \
    --set defaultRules.enabled=true --set defaultInstance.enabled=true \
    --set defaultInstance.image.repository=falconer.local/sensor \
    --set defaultInstance.image.pullPolicy=Never \
    --set defaultInstance.outputs.kubernetesEvents=true
kubectl wait -n "$NS" --for=condition=Ready falcoinstance/default --timeout=300s

step "applying the example rules"
kubectl apply -n "$NS" --server-side -f <(docker run --rm -i --entrypoint falconer "$SENSOR_IMAGE" \
    rules to-crd /dev/stdin --name payments --namespace "$NS" --order 10 \
    < "$ROOT/rules/examples/payments_rules.yaml")
kubectl label -n "$NS" falcorule/payments falconer.io/ruleset=default --overwrite
kubectl wait -n "$NS" --for=condition=Valid falcorule/payments --timeout=60s

step "acting in a pod: reading /etc/shadow"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl run -n demo shop --image=busybox:1.36 --restart=Never --command -- sleep 3600 \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl wait -n demo --for=condition=Ready pod/shop --timeout=120s
kubectl exec -n demo shop -- cat /etc/shadow >/dev/null

step "waiting for the FalcoAlert and the Event"
rule="Credential file read by a non-login program"
for _ in $(seq 60); do
    if kubectl get falcoalerts -n demo -o jsonpath='{.items[*].spec.rule}' | grep -q "$rule" \
        && kubectl get events -n demo --field-selector involvedObject.name=shop \
            -o jsonpath='{.items[*].reason}' | grep -q CredentialFileReadByANonLoginProgram; then
        kubectl get falcoalerts -n demo
        step "ok: the alert reached a FalcoAlert and an Event on pod demo/shop"
        exit 0
    fi
    sleep 2
done
echo "no FalcoAlert/Event for '$rule' within 120 s" >&2
kubectl logs -n "$NS" -l app.kubernetes.io/name=falconer-sensor --tail=50 >&2 || true
exit 1
