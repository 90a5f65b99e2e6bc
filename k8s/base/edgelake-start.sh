#!/bin/sh
# Starts an unmodified EdgeLake node behind netstrap (k8s/base and docker/compose.yaml run it in
# the node's container). It waits for the values netstrap resolved (netstrap.env in the shared
# state dir: advertised address and ports, stable name, LEDGER_CONN as an address EdgeLake can
# dial), exports them, and runs the image's own entrypoint: EdgeLake's main.al then declares the
# node with inputs that stay the same across restarts, finds its policy again and keeps its id.
#
# Today's image (EdgeLake/Dockerfile): a PyInstaller binary ${EDGELAKE_PATH}/${APP_NAME}.
# Images up to 2025-04 run the Python source: set
#   EDGELAKE_COMMAND="python3 /app/EdgeLake/edge_lake/edgelake.py"
set -eu
state="${NETSTRAP_STATE_DIR:-/var/lib/netstrap}"
waited=0
until [ -s "$state/netstrap.env" ]; do
  [ "$waited" -eq 0 ] && echo "edgelake-start: waiting for $state/netstrap.env (written by netstrap)" >&2
  waited=$((waited + 1))
  sleep 1
done
set -a
. "$state/netstrap.env"
set +a
home="${EDGELAKE_PATH:-/app}"
# shellcheck disable=SC2086 # EDGELAKE_COMMAND may be "interpreter script"
exec ${EDGELAKE_COMMAND:-"$home/${APP_NAME:-edgelake_agent}"} process "$home/deployment-scripts/node-deployment/main.al"
