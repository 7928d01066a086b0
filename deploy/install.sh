#!/usr/bin/env bash
# Install the services into a virtual environment the way the image does (the Dockerfile runs
# this script; CI runs it too, so the image's install steps are exercised without a container
# engine). Locked dependencies, no dev tools, the workspace packages as wheels (not editable).
#
#   deploy/install.sh TARGET_VENV      e.g. /opt/cofounder (image) or a temp dir (CI)
set -euo pipefail
target="${1:?usage: deploy/install.sh TARGET_VENV}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --no-cache-dir 'uv>=0.8,<1'
  export PATH="$(python3 -m site --user-base)/bin:$PATH"
fi
cd "$repo"
UV_PROJECT_ENVIRONMENT="$target" UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
  uv sync --locked --no-dev --no-editable --quiet
# The install is whole when every service registered its entry point.
"$target/bin/cofounder" serve --list
