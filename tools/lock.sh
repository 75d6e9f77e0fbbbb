#!/usr/bin/env bash
# Regenerate requirements.lock: resolve pyproject.toml's ranges (every extra `make install`
# uses) in a throw-away venv and record the exact version of every package that got installed.
# `make install` then installs from this file, so a fresh machine gets what the tests ran on.
#
# The lock is for CPython 3.11 on Linux x86-64 (this project's machines); on another Python or
# platform `make install` may need `make lock` first (or `pip install -e .` with the ranges).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$PYTHON" -m venv "$tmp/venv"
pip=("$tmp/venv/bin/python" -m pip --no-cache-dir)
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet "$TORCH"
"${pip[@]}" install --quiet -e ".[$EXTRAS]"
{
    echo "# Exact versions for \`make install\` (pip constraints). Regenerate with \`make lock\`."
    echo "# Resolved with $("$tmp/venv/bin/python" --version) on $(uname -sm), $(date -u +%Y-%m-%d)."
    echo "pip==$("$tmp/venv/bin/python" -m pip --version | awk '{print $2}')"
    # The torch wheel served here is tagged +cpu; "==2.13.0" matches it and PyPI's build alike.
    "${pip[@]}" freeze --exclude-editable --all | grep -v -e '^#' -e '^pip==' | sed -E 's/^(torch==[^+]+)\+cpu$/\1/' | LC_ALL=C sort -f
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
