#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run all of it:
# lint (ruff, import-linter contracts), types (mypy --strict gw), and pytest (unit, property,
# contract, integration with real gunicorn, nginx and redis-server on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

# Binary -> Debian package. prometheus gives promtool and prometheus (tests/integration/
# test_operator_kit.py runs its own on a free port; the package's service is never used).
declare -A package=([nginx]=nginx [redis-server]=redis-server [promtool]=prometheus
                    [prometheus]=prometheus)
need=()
for bin in nginx redis-server promtool prometheus; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("${package[$bin]}")
done
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Sorted and unique: promtool and prometheus name one package.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,lint,redis]'

echo "== ruff"
.venv/bin/ruff check gw tests bench gunicorn.conf.py setup.py
echo "== lint-imports (setup.cfg [importlinter])"
.venv/bin/lint-imports
echo "== mypy --strict gw"
.venv/bin/mypy --strict gw
echo "== pytest"
.venv/bin/pytest -q "$@"
