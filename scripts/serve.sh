#!/usr/bin/env bash
# The main job on a fresh machine: install citypilot in .venv, make sure an administrator account
# exists, and run the control centre on embedded defaults (private PostgreSQL and NATS in the data
# directory). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_venv.sh

if [ -z "$(citypilot user list)" ]; then
    password=$(python -c "import secrets; print(secrets.token_urlsafe(12))")
    printf '%s\n' "$password" | citypilot user add admin --role admin --password-stdin >/dev/null
    echo "First start: created the administrator account 'admin' with password: $password"
    echo "(change it with: .venv/bin/citypilot user passwd admin)"
fi
exec citypilot serve "$@"
