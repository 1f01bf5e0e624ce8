#!/usr/bin/env bash
# Deploys Watercolor to a local minikube cluster: builds the images into
# minikube's Docker, deletes the running Deployments and Services, re-creates
# the Services, then the Deployments. ./deploy.sh -h lists the options.
set -euo pipefail
# shellcheck source=.script_utils
. "$(dirname "$0")/.script_utils"
cd "$WTC_ROOT"

usage() {
  cat <<'EOF'
Usage: ./deploy.sh [-k] [-n] [-h]

Deploys Watercolor to minikube: one API pod (wtc-api) and three processing
pods (wtc-process), as set by `replicas` in wtc-api_deployment.yml and
wtc-process_deployment.yml. Start minikube first:

    minikube start --driver=docker

In order, it:
  1. checks that minikube is running;
  2. points Docker at minikube's daemon (eval "$(minikube docker-env)"), so
     that the images are built where the cluster finds them (they are on no
     registry);
  3. builds both images with ./build.sh;
  4. deletes the active Deployments, Services and NetworkPolicy;
  5. re-creates the Services first, so that the API pod is given
     WTC_PROCESS_SERVICE_HOST and WTC_PROCESS_SERVICE_PORT;
  6. applies the NetworkPolicy and the Deployments (backends first);
  7. waits for both rollouts and prints the API's URL.

Options:
  -k   Only destroy the current deployment (step 4), then stop.
  -n   Build without Docker's cache (./build.sh -n).
  -h   Show this help.

Variables:
  MINIKUBE_PROFILE    minikube profile to use (default: minikube); kubectl
                      acts on the context of that name only, so that no
                      other cluster is touched.
  WTC_BUILD_COMMAND   how to build (default: ./build.sh); set it to `true`
                      to deploy images already in minikube. ./build.sh's own
                      variables (WTC_BASE_IMAGE, WTC_CA_BUNDLE,
                      WTC_WHEELHOUSE, ...) are passed on.
  WTC_ROLLOUT_TIMEOUT how long to wait for each rollout (default: 300s).
EOF
}

KILL_ONLY=0
BUILD_ARGS=()
while getopts ":knh" opt; do
  case $opt in
    k) KILL_ONLY=1 ;;
    n) BUILD_ARGS+=(-n) ;;
    h) usage; exit 0 ;;
    *) die "unknown option -$OPTARG (see ./deploy.sh -h)." ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (see ./deploy.sh -h)."

PROFILE=${MINIKUBE_PROFILE:-minikube}
ROLLOUT_TIMEOUT=${WTC_ROLLOUT_TIMEOUT:-300s}
BUILD_COMMAND=${WTC_BUILD_COMMAND:-./build.sh}

# Everything deploy.sh creates, in the order it creates them.
SERVICES=(wtc-process_service.yml wtc-api_service.yml)
POLICIES=(wtc-process_networkpolicy.yml)
DEPLOYMENTS=(wtc-process_deployment.yml wtc-api_deployment.yml)

require_cmd minikube "install it (https://minikube.sigs.k8s.io/docs/start/), then run 'minikube start --driver=docker'."
MINIKUBE=(minikube --profile "$PROFILE")
if have kubectl; then
  KUBECTL=(kubectl --context "$PROFILE")
else
  KUBECTL=("${MINIKUBE[@]}" kubectl -- --context "$PROFILE")
fi

info "checking that minikube is running"
"${MINIKUBE[@]}" status >/dev/null 2>&1 ||
  die "minikube is not running: start it with 'minikube start --driver=docker', then run ./deploy.sh again."

destroy() {
  info "deleting the active Deployments (their pods drain first), Services and NetworkPolicy"
  run "${KUBECTL[@]}" delete --ignore-not-found --wait=true --cascade=foreground \
    "${DEPLOYMENTS[@]/#/--filename=}"
  run "${KUBECTL[@]}" delete --ignore-not-found --wait=true \
    "${SERVICES[@]/#/--filename=}" "${POLICIES[@]/#/--filename=}"
}

if [ "$KILL_ONLY" = 1 ]; then
  destroy
  info "Watercolor is no longer deployed"
  exit 0
fi

info "pointing Docker at minikube's daemon"
eval "$("${MINIKUBE[@]}" docker-env --shell bash)"

info "building the images into minikube"
# shellcheck disable=SC2086 # WTC_BUILD_COMMAND may carry its own arguments
run $BUILD_COMMAND ${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}

destroy

info "creating the Services (before the pods, which learn their addresses from them)"
run "${KUBECTL[@]}" apply "${SERVICES[@]/#/--filename=}"
run "${KUBECTL[@]}" apply "${POLICIES[@]/#/--filename=}"

info "creating the Deployments"
run "${KUBECTL[@]}" apply "${DEPLOYMENTS[@]/#/--filename=}"

info "waiting for the rollouts"
run "${KUBECTL[@]}" rollout status deployment/wtc-process --timeout="$ROLLOUT_TIMEOUT"
run "${KUBECTL[@]}" rollout status deployment/wtc-api --timeout="$ROLLOUT_TIMEOUT"

node_port=$("${KUBECTL[@]}" get service wtc-api --output 'jsonpath={.spec.ports[0].nodePort}')
url="http://$("${MINIKUBE[@]}" ip):$node_port"
info "Watercolor is deployed; the API answers at $url"
info "(with minikube's docker driver on macOS or Windows, 'minikube service wtc-api --url' opens a tunnel to it)"
echo "$url"
