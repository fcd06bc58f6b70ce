#!/usr/bin/env bash
# Install gw into .venv and run it on the bundled demo: three upstreams (users, orders,
# products) and the gateway on http://127.0.0.1:8080. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .

PORT="${GW_DEMO_PORT:-8080}"
export DEMO_USERS_PORT="${DEMO_USERS_PORT:-3001}" DEMO_ORDERS_PORT="${DEMO_ORDERS_PORT:-3002}" \
  DEMO_PRODUCTS_PORT="${DEMO_PRODUCTS_PORT:-3003}"
.venv/bin/gw check -c examples/demo/gw.yaml

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

.venv/bin/python examples/demo/upstreams.py --users "$DEMO_USERS_PORT" \
  --orders "$DEMO_ORDERS_PORT" --products "$DEMO_PRODUCTS_PORT" &
pids+=($!)
GW_CONFIG=examples/demo/gw.yaml GW_BIND="127.0.0.1:$PORT" GW_WORKERS=2 \
  .venv/bin/gunicorn -c gunicorn.conf.py gw.app:app &
pids+=($!)

for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.2
done
B="http://127.0.0.1:$PORT"
cat <<TXT

gw is running on $B in front of the demo services. Try:

  curl -i $B/api/orders/ord_x7k9          # routed to orders as GET /orders/ord_x7k9
  curl -i $B/api/users/usr_8a3f           # routed to users as GET /users/usr_8a3f
  curl -i $B/api/v1/products/             # prefix /api/v1 rewritten to / on products
  curl -i -X DELETE $B/api/orders/ord_x7k9   # 405 with Allow: GET, HEAD, POST
  curl -i $B/api/nothing-here             # 404 as JSON, with a request id
  curl -i '$B/api/orders/%2e%2e/users/usr_8a3f'  # dot segments resolved before routing
  curl -i -H 'X-User-Id: admin' $B/api/users/usr_8a3f  # spoofed identity header is dropped
  .venv/bin/gw explain -c examples/demo/gw.yaml GET /api/orders/ord_x7k9
  .venv/bin/gw routes -c examples/demo/gw.yaml

Access log lines (one JSON object per request) appear below. Ctrl-C stops everything.
TXT
wait
