#!/usr/bin/env bash
# Create (once) and print the path of a virtual environment with everything rtmdet_keras needs.
# The environment lives outside the checkout, keyed by the hash of requirements.txt, so a fresh
# clone reuses it and a change of pins builds a new one. Override the place with RTMDET_VENV.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
hash=$(cat "$here/requirements.txt" | sha256sum | cut -c1-12)
venv="${RTMDET_VENV:-$HOME/.cache/rtmdet_keras/venv-$hash}"
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "setting up $venv (about a minute, 2.5 GB)..." >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$here/requirements.txt" >&2
  touch "$venv/.complete"
fi
# The package itself, editable, so the checkout's code is what runs.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >&2
echo "$venv"
