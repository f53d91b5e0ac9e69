#!/usr/bin/env bash
# Retrain on a softserve stack (deploy/stack.yml) as a one-shot Swarm job: publishes the next
# version of the model into the stack's repository; every replica serves it within a poll interval.
#
#   deploy/retrain.sh STACK [training options]      # e.g. deploy/retrain.sh softserve --epochs 50
#
# The job runs the stack's own train service spec (image, repository settings, mounts), with
# the given training options instead of --if-empty, then is removed; its logs are printed and its
# exit status is this script's. Options: see `docker run --rm softserve-train --help`.
set -euo pipefail
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
stack=$1; shift
train=$(docker service inspect "${stack}_train" --format '{{json .Spec.TaskTemplate.ContainerSpec}}') \
    || { echo "retrain: no service ${stack}_train; deploy the stack first (docker stack deploy -c deploy/stack.yml $stack)" >&2; exit 2; }
image=$(docker service inspect "${stack}_train" --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
name="${stack}_retrain-$(date +%s)"
args=(--name "$name" --mode replicated-job --restart-condition none --detach
      --label com.docker.stack.namespace="$stack" --network "${stack}_default")
# the train service's environment and mounts, as they are
while IFS= read -r env; do [ -n "$env" ] && args+=(--env "$env"); done < <(
    docker service inspect "${stack}_train" --format '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}')
while IFS= read -r mount; do [ -n "$mount" ] && args+=(--mount "$mount"); done < <(
    docker service inspect "${stack}_train" --format '{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}type={{.Type}},source={{.Source}},target={{.Target}}{{println}}{{end}}')
: "$train"
docker service create "${args[@]}" "$image" "$@" >/dev/null
echo "retrain: job $name started" >&2
state=""
for _ in $(seq 1 1200); do
    state=$(docker service ps "$name" --format '{{.CurrentState}}' 2>/dev/null | head -n 1)
    case "$state" in
        Complete*|Failed*|Rejected*|Shutdown*) break ;;
    esac
    sleep 1
done
docker service logs --raw "$name" 2>&1 || true
docker service rm "$name" >/dev/null
case "$state" in
    Complete*) echo "retrain: job $name complete" >&2 ;;
    *) echo "retrain: job $name did not complete: ${state:-no state}" >&2; exit 1 ;;
esac
