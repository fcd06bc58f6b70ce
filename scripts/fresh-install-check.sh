#!/usr/bin/env bash
# A newcomer's and an operator's first steps, on a copy of this checkout that nothing else has
# touched. Catches a dependency that only the test extras (or the checkout on sys.path) provide.
#
# 1. Install: build gw's wheel, install it (not editable, no extras) into a brand-new
#    virtualenv, and start it the way deploy/README.md does (`gunicorn -c gunicorn.conf.py
#    gw.app:app`, the default worker) from a directory where the source tree is not importable,
#    on the bundled demo config in front of the demo services; check proxied requests end to end.
# 2. Demo: run the README's `bash examples/demo/run.sh --check` in the copy (its own new .venv),
#    on moved ports: every command its banner prints must answer as the banner says.
#
# Everything it starts is stopped by PID; its temporary directory is removed by exact path.
# Usage: bash scripts/fresh-install-check.sh   (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

command -v curl >/dev/null 2>&1 || {
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq curl >/dev/null
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gw-fresh-install.XXXXXX")"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "FAIL: $*" >&2
  local log
  for log in "$WORK"/run/*.log; do
    [ -f "$log" ] || continue
    echo "--- last lines of $(basename "$log")" >&2
    tail -n 30 "$log" >&2
  done
  exit 1
}

# pip's notes about the machine's extra index locations are not news.
quiet_pip() { grep -v "^WARNING: Location '" || true; }

# --- the copy: the files a clone would have (tracked, plus new files git does not ignore) ---
t0=$SECONDS
echo "== copy of the checkout in $WORK/src"
mkdir -p "$WORK/src" "$WORK/run"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -C "$WORK/src" -xf -
else # an unpacked release: everything but local environments and build output
  tar -C "$ROOT" --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    -cf - . | tar -C "$WORK/src" -xf -
fi

# --- 1. install ---
echo "== wheel (pip wheel --no-deps, isolated build as pip install does)"
"$PYTHON" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src" 2>&1 | quiet_pip ||
  fail "pip wheel"
wheel=("$WORK"/dist/gw-*.whl)
[ -f "${wheel[0]}" ] || fail "no wheel built"
echo "   ${wheel[0]##*/}"

echo "== new virtualenv, the wheel installed without extras"
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv"
"$VENV/bin/pip" install -q "${wheel[0]}" 2>&1 | quiet_pip || fail "pip install ${wheel[0]##*/}"

# From here on: a directory without the source tree, and no inherited import path.
cd "$WORK/run"
unset PYTHONPATH GW_WORKER_CLASS GW_RUNTIME_DIR
# deploy/README.md: gunicorn.conf.py is copied from the repository next to the venv.
cp "$WORK/src/gunicorn.conf.py" "$WORK/src/examples/demo/gw.yaml" \
  "$WORK/src/examples/demo/upstreams.py" "$WORK/run/"
where="$("$VENV/bin/python" -c 'import gw; print(gw.__file__)')"
case "$where" in
  "$VENV"/lib/*) echo "   gw imports from $where" ;;
  *) fail "gw imports from $where, not from the new virtualenv" ;;
esac
# The default worker under both its names (gw.worker: the one older env files and units use).
"$VENV/bin/python" -c 'import gw.edge.worker, gw.worker, gw.app' || fail "the worker classes do not import"
# setup.py builds gw's compiled parts optionally (gw runs without them); on a machine with a C
# compiler, as CI's, the wheel must carry them, or the bench would measure the fallbacks.
if [ "${GW_REQUIRE_COMPILED:-}" = 1 ]; then
  "$VENV/bin/python" -c 'import gw.observe._accessline, gw.observe._grouped, gw.edge._replyfields, gw.edge._requestfields, gw.upstream._wire, gw.limits._table, gw.core._fields, gw.host._io' ||
    fail "the wheel lacks a compiled part (setup.py's C extensions did not build)"
  echo "   the compiled parts are in the wheel"
fi

free_port() {
  "$VENV/bin/python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
PORT="$(free_port)"
export DEMO_USERS_PORT DEMO_ORDERS_PORT DEMO_PRODUCTS_PORT JWT_SECRET
DEMO_USERS_PORT="$(free_port)" DEMO_ORDERS_PORT="$(free_port)" DEMO_PRODUCTS_PORT="$(free_port)"
JWT_SECRET="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))')"

echo "== gw check, demo services, gunicorn -c gunicorn.conf.py gw.app:app on 127.0.0.1:$PORT"
"$VENV/bin/gw" check -c gw.yaml || fail "gw check -c gw.yaml"
"$VENV/bin/python" upstreams.py --users "$DEMO_USERS_PORT" --orders "$DEMO_ORDERS_PORT" \
  --products "$DEMO_PRODUCTS_PORT" >upstreams.log 2>&1 &
upstreams_pid=$!
pids+=("$upstreams_pid")
GW_CONFIG="$WORK/run/gw.yaml" GW_BIND="127.0.0.1:$PORT" GW_WORKERS=1 \
  "$VENV/bin/gunicorn" -c "$WORK/run/gunicorn.conf.py" gw.app:app >gateway.log 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")

B="http://127.0.0.1:$PORT"
up=0
for _ in $(seq 150); do # at most about 30 s
  kill -0 "$gateway_pid" 2>/dev/null || fail "the gateway exited"
  kill -0 "$upstreams_pid" 2>/dev/null || fail "the demo services exited"
  if curl -fsS --max-time 2 -o /dev/null "$B/health" 2>/dev/null &&
    curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$DEMO_USERS_PORT/"; then
    up=1
    break
  fi
  sleep 0.2
done
[ "$up" = 1 ] || fail "the gateway did not answer $B/health in 30 s"
grep -q "Using worker: gw.edge.worker.BalancedGeventWorker" gateway.log ||
  fail "the gateway does not run the default worker gw.edge.worker.BalancedGeventWorker"

# expect NAME STATUS PATTERN CURL_ARGS...: the status, and PATTERN (grep -E) in headers + body.
expect() {
  local name="$1" status="$2" pattern="$3" got
  shift 3
  got="$(curl -sS --max-time 5 -D "$WORK/run/headers" -o "$WORK/run/body" -w '%{http_code}' "$@")" ||
    fail "$name: curl $*"
  [ "$got" = "$status" ] || fail "$name: status $got, expected $status; body: $(head -c 300 body)"
  grep -qiE -- "$pattern" headers body ||
    fail "$name: no /$pattern/ in: $(cat headers body | head -c 600)"
  echo "   ok $name: $status, /$pattern/"
}
expect "products, proxied" 200 '"product_id": ?"prod_k3j7"' "$B/api/products/"
expect "login, proxied" 200 '"token": ?"ey' -X POST "$B/api/auth/login"
TOKEN="$("$VENV/bin/python" -c 'import json; print(json.load(open("body"))["token"])')"
expect "order with a token" 200 'X-Service-Saw-User: usr_8a3f' \
  -H "Authorization: Bearer $TOKEN" "$B/api/orders/ord_x7k9"
expect "order without a token" 401 '"error"' "$B/api/orders/ord_x7k9"
expect "aggregate" 200 '"recommendations": ?\[\{' -H "Authorization: Bearer $TOKEN" "$B/api/home"

for pid in "$gateway_pid" "$upstreams_pid"; do
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
pids=()
if grep -q "Traceback" gateway.log; then fail "a traceback in the gateway's log"; fi
echo "== install: ok ($((SECONDS - t0)) s)"

# --- 2. the README's demo, in the copy, on moved ports ---
t1=$SECONDS
echo "== bash examples/demo/run.sh --check (new .venv in the copy)"
cd "$WORK/src"
GW_DEMO_PORT="$(free_port)" DEMO_USERS_PORT="$(free_port)" DEMO_ORDERS_PORT="$(free_port)" \
  DEMO_PRODUCTS_PORT="$(free_port)" bash examples/demo/run.sh --check 2>&1 | quiet_pip ||
  { echo "FAIL: bash examples/demo/run.sh --check" >&2; exit 1; }
echo "== demo: ok ($((SECONDS - t1)) s)"

# --- 3. the demo when the gateway cannot start: the gateway's own error, and nothing after it ---
t2=$SECONDS
echo "== bash examples/demo/run.sh --check with a worker class that does not exist"
rc=0
out="$(GW_WORKER_CLASS=gw.edge.worker.NoSuchWorker GW_DEMO_PORT="$(free_port)" \
  DEMO_USERS_PORT="$(free_port)" DEMO_ORDERS_PORT="$(free_port)" \
  DEMO_PRODUCTS_PORT="$(free_port)" bash examples/demo/run.sh --check 2>&1)" || rc=$?
shown="$(sed -n "/^The gateway exited. The gateway's log/,\$p" <<<"$out")"
# The heading and at most 30 lines of the log: nothing of the demo's own follows it.
if [ "$rc" != 1 ] || ! grep -q "NoSuchWorker" <<<"$shown" || [ "$(wc -l <<<"$shown")" -gt 31 ] ||
  grep -qE "JSONDecodeError|^curl: " <<<"$out"; then
  echo "FAIL: expected exit status 1, then the gateway's log naming NoSuchWorker, last; got $rc:" >&2
  quiet_pip <<<"$out" | tail -n 40 >&2
  exit 1
fi
echo "== demo, gateway cannot start: ok, exit status 1, its log shown ($((SECONDS - t2)) s)"
