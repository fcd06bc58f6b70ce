#!/usr/bin/env bash
# The mypyc-compiled form of gw (setup.py, GW_MYPYC=1): build the wheel from a clean copy of
# the tree, unpack it, and run the in-process tests on it (about 2 minutes). The pure form is
# what scripts/test-all.sh tests; both must pass.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/gw-compiled-XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$repo/.venv/bin/pip" install -q wheel 'setuptools>=68'
mkdir "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard | (cd "$repo" && xargs -0 cp --parents -t "$work/src")
(cd "$work/src" && GW_MYPYC=1 "$repo/.venv/bin/pip" wheel -q --no-build-isolation --no-deps \
  -w "$work/wheel" .)
"$repo/.venv/bin/python" -m zipfile -e "$work"/wheel/gw-*.whl "$work/site"
# The rest of the tree beside it (tests, setup.cfg, README.md, examples, deploy): not gw/.
(cd "$work/src" && tar -cf - --exclude=./gw .) | (cd "$work/site" && tar -xf -)
# From the unpacked wheel's directory, `gw` is the compiled one (the editable install's
# finder comes after the current directory); test_compiled_form.py fails if it is not.
cd "$work/site"
GW_EXPECT_COMPILED=1 "$repo/.venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/unit tests/property tests/pipeline tests/host tests/metrics "$@"
