#!/usr/bin/env bash
# The main job, for now: describe the Apricode stack (seed 004) once, then validate it, render
# Kubernetes manifests, Kustomize overlays and a Helm chart for every environment, and price it.
set -euo pipefail
out=${1:-out/demo}
spec=examples/apricode/shipyard.yaml
shipyard=.venv/bin/shipyard
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "validate $spec (base and every environment)"
$shipyard validate -f "$spec"

step "render Kubernetes manifests, every environment -> $out/kubernetes/<env>/"
$shipyard render kubernetes -f "$spec" -o "$out/kubernetes"

step "render Kustomize base + overlays -> $out/kustomize/"
$shipyard render kustomize -f "$spec" -o "$out/kustomize"

step "render the Helm chart -> $out/helm/"
$shipyard render helm -f "$spec" -o "$out/helm"

step "capacity of production (seed 004's table: 7.35 / 18.5 cores, 15.5 / 36 GB, 360 GB)"
$shipyard capacity -f "$spec" -e production

step "monthly cost of production per provider, cheapest first"
$shipyard cost -f "$spec" -e production

step "done"
echo "manifests:  $out/kubernetes/<env>/   (kubectl apply -f $out/kubernetes/production)"
echo "kustomize:  $out/kustomize/overlays/<env>  (kubectl apply -k ...)"
echo "helm chart: $out/helm/   (helm install apricode $out/helm -f $out/helm/values-production.yaml)"
