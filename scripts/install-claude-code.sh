#!/usr/bin/env bash
# Install the pinned Claude Code that the end-to-end tests run, into <repo>/.cache/claude-code.
# Idempotent: when the binary there already reports the pinned version, nothing is downloaded.
# Prints the path of the binary on stdout (progress goes to stderr).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The one place the version is pinned; tests/e2e/conftest.py reads the same file.
version="$(tr -d '[:space:]' < "$repo/tests/e2e/CLAUDE_CODE_VERSION")"
prefix="$repo/.cache/claude-code"
pkg_dir="$prefix/node_modules/@anthropic-ai/claude-code"
bin="$pkg_dir/bin/claude.exe"

has_pinned_version() {
    local out
    [ -x "$bin" ] && out="$("$bin" --version 2>/dev/null)" && [[ "$out" == "$version "* ]]
}

if has_pinned_version; then
    echo "$bin"
    exit 0
fi

command -v npm >/dev/null || { echo "install-claude-code: npm is required" >&2; exit 1; }

mkdir -p "$prefix"
# A private package.json keeps npm from walking up and treating the repo as the project.
[ -f "$prefix/package.json" ] || echo '{"private": true}' > "$prefix/package.json"
echo "install-claude-code: installing @anthropic-ai/claude-code@$version into $prefix" >&2
# npm warns that the package wants Node 22; the native binary does not use Node, so that is harmless.
npm install --no-audit --no-fund --save-exact --prefix "$prefix" \
    "@anthropic-ai/claude-code@$version" >&2

# bin/claude.exe is a placeholder until the package's postinstall links the native binary
# over it; where npm was told to skip scripts (ignore-scripts), run that step ourselves.
if ! has_pinned_version && [ -f "$pkg_dir/install.cjs" ]; then
    (cd "$pkg_dir" && node install.cjs) >&2
fi

if ! has_pinned_version; then
    echo "install-claude-code: $bin does not report version $version" >&2
    exit 1
fi
echo "$bin"
