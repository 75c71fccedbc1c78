#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, the slow end-to-end tests included.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$here/scripts/setup_env.sh")"
cd "$here"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
