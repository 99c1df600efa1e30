#!/usr/bin/env bash
# Builds callfleet's wheel and proves it on other Pythons: for each of
# $WHEEL_PYTHONS (default: python3.12 python3.13), a fresh virtual environment gets
# the wheel (with its test extras) from pip's cache, runs the unit tests against the
# installed package (not src/), then `callfleet demo` in an empty directory outside
# the checkout: real SIP calls to the simulator, the agent on its offline voices.
# A Python that is not installed is named and skipped; any failure fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
pythons="${WHEEL_PYTHONS:-python3.12 python3.13}"
work="$root/build/wheel-check"
rm -rf "$work" && mkdir -p "$work/dist"

find_python() {  # $1 = python3.X: on PATH, else pyenv's
  local p
  p="$(command -v "$1" 2>/dev/null || true)"
  if [ -n "$p" ] && "$p" -c 'import sys' 2>/dev/null; then echo "$p"; return; fi
  p="$(ls -d "$HOME"/.pyenv/versions/"${1#python}"*/bin/"$1" 2>/dev/null | sort -V | tail -n1)"
  [ -n "$p" ] && echo "$p"
}

start=$(date +%s)
.venv/bin/python -m build --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/callfleet-*.whl)"
echo "wheel-check: built $(basename "$wheel") in $(( $(date +%s) - start )) s"

for name in $pythons; do
  t0=$(date +%s)
  py="$(find_python "$name" || true)"
  if [ -z "$py" ]; then
    echo "wheel-check: $name is not installed; skipped"
    continue
  fi
  venv="$work/venv-$name"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -qq --upgrade pip
  "$venv/bin/pip" install -qq "$wheel[dev]"
  installed="$("$venv/bin/python" -c 'import callfleet; print(callfleet.__file__)')"
  case "$installed" in
    "$venv"/*) ;;
    *) echo "wheel-check: $name imports callfleet from $installed, not the wheel"; exit 1 ;;
  esac
  t1=$(date +%s)
  "$venv/bin/python" -m pytest tests/unit -q -p no:cacheprovider -x -n 4 --dist worksteal
  t2=$(date +%s)
  demo_dir="$(mktemp -d -t callfleet-wheel-demo.XXXXXX)"
  (cd "$demo_dir" && env -u CALLFLEET_DATABASE_URL -u CALLFLEET_DATA_DIR \
    "$venv/bin/callfleet" demo --speed 4 --json >"$demo_dir/demo.json")
  "$venv/bin/python" - "$demo_dir/demo.json" <<'PY'
import json, sys
batch = json.load(open(sys.argv[1]))
calls = batch["call_data"]
talked = [c for c in calls if any(t["user"] == "user" for t in c.get("transcripts") or [])]
assert talked, "no call heard the callee"
print(f"demo: {len(calls)} calls, {len(talked)} with the callee's words transcribed")
PY
  rm -rf "$demo_dir"
  t3=$(date +%s)
  echo "wheel-check: $name ($("$py" -V)) install $((t1 - t0)) s, unit tests $((t2 - t1)) s," \
    "demo $((t3 - t2)) s"
done
echo "wheel-check: done in $(( $(date +%s) - start )) s"
