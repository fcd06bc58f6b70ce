#!/usr/bin/env bash
# Install gw into .venv and run it on the bundled demo: three upstreams (users, orders,
# products) and the gateway on http://127.0.0.1:8080 with auth, rate limiting, an aggregate
# route and a response transformation.
#
#   bash examples/demo/run.sh           serve, print requests to try; Ctrl-C stops everything
#   bash examples/demo/run.sh --check   run every command the banner prints, each in a fresh
#                                       shell, check its answer, stop everything; exit 0 or 1
#
# Ports: GW_DEMO_PORT (8080), DEMO_USERS_PORT (3001), DEMO_ORDERS_PORT (3002),
# DEMO_PRODUCTS_PORT (3003).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

CHECK=0
case "${1:-}" in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: bash examples/demo/run.sh [--check]" >&2; exit 2 ;;
esac

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .

PORT="${GW_DEMO_PORT:-8080}"
export DEMO_USERS_PORT="${DEMO_USERS_PORT:-3001}" DEMO_ORDERS_PORT="${DEMO_ORDERS_PORT:-3002}" \
  DEMO_PRODUCTS_PORT="${DEMO_PRODUCTS_PORT:-3003}"
# A fresh random secret each run: the demo's users service signs logins with it.
JWT_SECRET="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))')"
export JWT_SECRET
.venv/bin/gw check -c examples/demo/gw.yaml

for port in "$PORT" "$DEMO_USERS_PORT" "$DEMO_ORDERS_PORT" "$DEMO_PRODUCTS_PORT"; do
  # SO_REUSEADDR as gunicorn and the demo services bind: only a listener makes this fail.
  if ! .venv/bin/python -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
    echo "port $port on 127.0.0.1 is in use. Choose others with GW_DEMO_PORT, DEMO_USERS_PORT," \
      "DEMO_ORDERS_PORT, DEMO_PRODUCTS_PORT." >&2
    exit 1
  fi
done

LOGS="$(mktemp -d "${TMPDIR:-/tmp}/gw-demo.XXXXXX")"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf -- "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

.venv/bin/python examples/demo/upstreams.py --users "$DEMO_USERS_PORT" \
  --orders "$DEMO_ORDERS_PORT" --products "$DEMO_PRODUCTS_PORT" >"$LOGS/upstreams.log" 2>&1 &
upstreams_pid=$!
pids+=("$upstreams_pid")
GW_CONFIG=examples/demo/gw.yaml GW_BIND="127.0.0.1:$PORT" GW_WORKERS=2 \
  .venv/bin/gunicorn -c gunicorn.conf.py gw.app:app >"$LOGS/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")

B="http://127.0.0.1:$PORT"

answers() { curl -s -o /dev/null --max-time 2 "$1"; }  # any HTTP answer at all

all_up() {
  curl -fsS --max-time 2 -o /dev/null "$B/health" 2>/dev/null &&
    answers "http://127.0.0.1:$DEMO_USERS_PORT/" && answers "http://127.0.0.1:$DEMO_ORDERS_PORT/" &&
    answers "http://127.0.0.1:$DEMO_PRODUCTS_PORT/"
}

# Say why, with the failing process's own words, and stop (the EXIT trap stops the rest).
fail_start() {
  echo >&2
  if ! kill -0 "$upstreams_pid" 2>/dev/null; then
    echo "The demo services stopped. Their output ($LOGS/upstreams.log):" >&2
    tail -n 30 "$LOGS/upstreams.log" >&2
  else
    echo "$1 The gateway's log ($LOGS/gateway.log):" >&2
    tail -n 30 "$LOGS/gateway.log" >&2
  fi
  exit 1
}

up=0
for _ in $(seq 100); do # at most about 20 s (more if each probe waits its 2 s)
  kill -0 "$gateway_pid" 2>/dev/null || fail_start "The gateway exited."
  kill -0 "$upstreams_pid" 2>/dev/null || fail_start ""
  if all_up; then up=1; break; fi
  sleep 0.2
done
[ "$up" = 1 ] || fail_start "The gateway did not answer $B/health in time."

login="$(curl -sS --max-time 5 -X POST -w '\n%{http_code}' "$B/api/auth/login")" ||
  fail_start "Logging in through the gateway failed."
[ "${login##*$'\n'}" = 200 ] ||
  fail_start "Logging in through the gateway answered ${login##*$'\n'}: ${login%$'\n'*}"
TOKEN="$(.venv/bin/python -c 'import json, sys
try:
    print(json.loads(sys.argv[1])["token"])
except (ValueError, KeyError, TypeError):
    sys.exit(1)' "${login%$'\n'*}")" || fail_start "The login answer has no token: ${login%$'\n'*}"

# What the banner prints, in order, and what --check expects of each command. One list, so the
# banner and its check cannot drift apart.
#   setup LINE                          printed first; run before every command by --check
#   section TITLE                       a heading
#   cmd LINE NOTE [PATTERN...]          a command to paste, its comment, and what its output must
#                                       contain (grep -iE); a PATTERN starting with ! must not match
SETUP=() KIND=() TEXT=() NOTE=() EXPECT=()
setup() { SETUP+=("$1"); }
section() { KIND+=(section) TEXT+=("$1") NOTE+=("") EXPECT+=(""); }
cmd() {
  local line="$1" note="$2"
  shift 2
  KIND+=(cmd) TEXT+=("$line") NOTE+=("$note") EXPECT+=("$(printf '%s\n' "$@")")
}

AUTH='-H "Authorization: Bearer $TOKEN"'
setup "cd $(printf '%q' "$ROOT")"
setup "export JWT_SECRET=$JWT_SECRET TOKEN=$TOKEN"
setup "export DEMO_USERS_PORT=$DEMO_USERS_PORT DEMO_ORDERS_PORT=$DEMO_ORDERS_PORT DEMO_PRODUCTS_PORT=$DEMO_PRODUCTS_PORT"

section "Routing, auth and identity headers:"
cmd "curl -i $B/api/orders/ord_x7k9" "# 401: no token" \
  '^HTTP/[0-9.]+ 401' '"error"'
cmd "curl -i $AUTH $B/api/orders/ord_x7k9" "# 200, orders saw usr_8a3f" \
  '^HTTP/[0-9.]+ 200' '^X-Service-Saw-User: usr_8a3f' '"order_id": ?"ord_x7k9"'
cmd "curl -i $AUTH -H \"X-User-Id: admin\" $B/api/orders/ord_x7k9" \
  "# the spoofed X-User-Id is dropped: X-Service-Saw-User: usr_8a3f" \
  '^HTTP/[0-9.]+ 200' '^X-Service-Saw-User: usr_8a3f' '!^X-Service-Saw-User: admin'
cmd "curl -i -H \"X-API-Key: demo-partner-key-0123456789abcdef\" $B/api/orders" \
  "# API key: acme-partner" '^HTTP/[0-9.]+ 200' '^X-Service-Saw-User: acme-partner'
cmd "curl -i $B/api/products/" "# auth optional on products" \
  '^HTTP/[0-9.]+ 200' '"product_id": ?"prod_k3j7"'

section "Composition and transformation:"
cmd "curl -s $AUTH $B/api/home" "# user + orders + recommendations" \
  '^\{"user": ?\{' '"recent_orders": ?\[\{' '"recommendations": ?\[\{' '"id": ?"usr_8a3f"' \
  '!internal_id' '!db_shard'
cmd "curl -s $AUTH $B/api/users/usr_8a3f" "# internal fields removed" \
  '"email": ?"alice@example.com"' '!internal_id' '!db_shard' '!feature_flags' '!email_address'

section "Rate limiting (10 logins per minute per client address):"
cmd "for i in \$(seq 12); do curl -s -o /dev/null -w '%{http_code} ' -X POST $B/api/auth/login; done" \
  "" '^200 (200 )*(429 )+$'

section "The gateway explains itself:"
cmd ".venv/bin/gw explain -c examples/demo/gw.yaml GET '/api/orders/x/../ord_x7k9' --token \"\$TOKEN\"" \
  "# every decision, in order" \
  '^request: GET /api/orders/ord_x7k9 ' '^route: order-by-id ' '^auth: required; credential verified' \
  "-> http://127.0.0.1:$DEMO_ORDERS_PORT/orders/ord_x7k9\$" '^answer: forwarded upstream'
cmd ".venv/bin/gw routes -c examples/demo/gw.yaml" "" \
  '/api/auth/login -> users' '/api/home ' '/api/orders/\{id\} -> orders' '/api/products/\*\* -> products'

print_banner() {
  cat <<TXT

gw is running on $B in front of the demo services. A token for Alice (usr_8a3f) is in \$TOKEN
below. In a new shell, paste these lines first (the secret is this run's demo secret):

TXT
  printf '  %s\n' "${SETUP[@]}"
  local i
  for i in "${!KIND[@]}"; do
    if [ "${KIND[i]}" = section ]; then
      printf '\n%s\n' "${TEXT[i]}"
    elif [ -z "${NOTE[i]}" ]; then
      printf '  %s\n' "${TEXT[i]}"
    elif [ "${#TEXT[i]}" -le 66 ]; then
      printf '  %-66s %s\n' "${TEXT[i]}" "${NOTE[i]}"
    else
      printf '  %s\n      %s\n' "${TEXT[i]}" "${NOTE[i]}"
    fi
  done
}

# Run one printed command as a user would: a new bash with a bare environment, started outside
# the checkout, after the printed setup lines. Prints what failed; returns 1 then.
check_command() {
  local line="$1" expect="$2" out rc=0 pattern failed=0
  out="$(cd / && env -i HOME="$HOME" PATH="$PATH" bash --noprofile --norc -c \
    "$(printf '%s\n' "${SETUP[@]}")
$line" 2>&1)" || rc=$?
  [ "$rc" = 0 ] || { echo "FAIL $line"; echo "     exit status $rc"; failed=1; }
  while IFS= read -r pattern; do
    [ -n "$pattern" ] || continue
    if [ "${pattern:0:1}" = "!" ]; then
      ! grep -qiE -- "${pattern:1}" <<<"$out" && continue
      echo "FAIL $line"; echo "     must not match /${pattern:1}/"
    else
      grep -qiE -- "$pattern" <<<"$out" && continue
      echo "FAIL $line"; echo "     must match /$pattern/"
    fi
    failed=1
  done <<<"$expect"
  if [ "$failed" = 1 ]; then
    echo "     its output:"
    sed 's/^/     | /' <<<"$out"
    return 1
  fi
  echo "ok   $line"
}

print_banner

if [ "$CHECK" = 1 ]; then
  echo
  echo "== --check: each command above, in a fresh shell"
  failures=0
  for i in "${!KIND[@]}"; do
    [ "${KIND[i]}" = cmd ] || continue
    check_command "${TEXT[i]}" "${EXPECT[i]}" || failures=$((failures + 1))
  done
  if [ "$failures" != 0 ]; then
    echo "$failures command(s) failed. The gateway's log, last lines:"
    tail -n 20 "$LOGS/gateway.log"
    exit 1
  fi
  echo "all printed commands answered as the banner says"
  exit 0
fi

echo
echo "Access log lines (one JSON object per request) appear below. Ctrl-C stops everything."
tail -n 0 --pid="$gateway_pid" -f "$LOGS/gateway.log" &
pids+=($!)
wait "$gateway_pid" || true
