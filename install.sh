#!/bin/sh
# Install tokenbudget for real use: a private Python environment in tokenbudget's data dir,
# the `tokenbudget` command in ~/.local/bin, hooks registered in Claude Code's user settings,
# and past sessions recorded. Running it again upgrades in place.
#
#   ./install.sh                 install or upgrade
#   ./install.sh --uninstall     remove the hooks, the command and the environment; keep the ledger
#   ./install.sh --uninstall --purge   also delete the ledger, history, config and logs
set -eu

repo="$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)"
action=install
purge=0
for arg in "$@"; do
    case "$arg" in
        --uninstall) action=uninstall ;;
        --purge) purge=1 ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$purge" = 1 ] && [ "$action" != uninstall ]; then
    echo "install.sh: --purge goes with --uninstall" >&2
    exit 2
fi

# Where platformdirs puts tokenbudget's data and config ($TOKENBUDGET_HOME overrides both).
if [ -n "${TOKENBUDGET_HOME:-}" ]; then
    data="$TOKENBUDGET_HOME"
    config_dir="$TOKENBUDGET_HOME"
elif [ "$(uname -s)" = Darwin ]; then
    data="$HOME/Library/Application Support/tokenbudget"
    config_dir="$data"
else
    data="${XDG_DATA_HOME:-$HOME/.local/share}/tokenbudget"
    config_dir="${XDG_CONFIG_HOME:-$HOME/.config}/tokenbudget"
fi
venv="$data/venv"
bindir="$HOME/.local/bin"
link="$bindir/tokenbudget"
# What the hooks in a project's shared .claude/settings.json run, found on PATH.
hook_link="$bindir/tokenbudget-hook"

if [ "$action" = uninstall ]; then
    if [ -x "$venv/bin/tokenbudget" ]; then
        "$venv/bin/tokenbudget" uninstall
    else
        echo "install.sh: no tokenbudget environment at $venv; nothing to unregister" >&2
    fi
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$venv/bin/tokenbudget" ]; then
        rm -f "$link"
    fi
    if [ -L "$hook_link" ] && [ "$(readlink "$hook_link")" = "$venv/bin/tokenbudget-hook" ]; then
        rm -f "$hook_link"
    fi
    rm -rf "$venv"
    if [ "$purge" = 1 ]; then
        # The resident answerer's key and state; a running answerer exits once its key goes.
        rm -rf "$data/resident"
        # Only tokenbudget's own files: $TOKENBUDGET_HOME may be a folder that holds others.
        for dir in "$data" "$config_dir"; do
            [ -d "$dir" ] || continue
            (
                cd "$dir" &&
                    rm -rf ledger.json ledger.json.lock ledger.json.corrupt-* \
                        ledger.json.before-rebuild-* .ledger.json.*.tmp history.jsonl \
                        ledger.journal.jsonl ledger.journal.jsonl.corrupt-* \
                        ledger.journal.jsonl.orphan-* ledger.hot.json ledger.hot budget-windows.json \
                        ledger.json.schema1-* ledger.journal.jsonl.schema1-* ledger.index \
                        stops.jsonl stops.jsonl.1 statusline-previous.json plugin-runs.json \
                        team-cache.json team-state.json .team-*.tmp \
                        config.json tokenbudget.log tokenbudget.log.1 plugin
            )
            rmdir "$dir" 2>/dev/null || true
        done
        echo "tokenbudget is uninstalled; its ledger, history and config are deleted."
    else
        echo "tokenbudget is uninstalled; the ledger is kept in $data (--purge deletes it)."
    fi
    exit 0
fi

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [ -z "$python" ]; then
    echo "install.sh: tokenbudget needs Python 3.11 or newer; none was found on PATH" >&2
    exit 1
fi

umask 077
mkdir -p "$data"
chmod 700 "$data"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$repo"
# Same version number after a change in the clone: reinstall our own package anyway.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --force-reinstall "$repo"

mkdir -p "$bindir"
ln -sf "$venv/bin/tokenbudget" "$link"
ln -sf "$venv/bin/tokenbudget-hook" "$hook_link"
case ":$PATH:" in
    *":$bindir:"*) ;;
    *) echo "note: $bindir is not on your PATH; add it to use the tokenbudget command." ;;
esac

"$venv/bin/tokenbudget" install
echo "tokenbudget is installed. Set a budget, e.g.: tokenbudget budget set daily 500k"
