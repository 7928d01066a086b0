#!/usr/bin/env bash
# Render users.acl.template into an ACL file: each <SERVICE>_PASSWORD variable (GATEWAY_PASSWORD,
# CONTEXT_ASSEMBLER_PASSWORD, AGENT_RUNNER_PASSWORD, BUDGET_PASSWORD, SNAPSHOT_PASSWORD,
# OPS_PASSWORD) becomes its SHA-256, so no password is stored in the file.
#   deploy/redis/render-acl.sh > users.acl
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# An ACL file has no comments or blank lines: the template's are dropped.
out="$(grep -v -e '^#' -e '^[[:space:]]*$' "$here/users.acl.template")"
for who in GATEWAY CONTEXT_ASSEMBLER AGENT_RUNNER BUDGET SNAPSHOT OPS; do
  var="${who}_PASSWORD"
  password="${!var:?set $var}"
  hash="$(printf '%s' "$password" | sha256sum | cut -d' ' -f1)"
  out="${out//\$\{${who}_PASSWORD_SHA256\}/$hash}"
done
printf '%s\n' "$out"
