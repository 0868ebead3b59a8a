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

# Where platformdirs puts tokenbudget's data (and $TOKENBUDGET_HOME overrides it).
if [ -n "${TOKENBUDGET_HOME:-}" ]; then
    data="$TOKENBUDGET_HOME"
elif [ "$(uname -s)" = Darwin ]; then
    data="$HOME/Library/Application Support/tokenbudget"
else
    data="${XDG_DATA_HOME:-$HOME/.local/share}/tokenbudget"
fi
venv="$data/venv"
bindir="$HOME/.local/bin"
link="$bindir/tokenbudget"

if [ "$action" = uninstall ]; then
    if [ -x "$venv/bin/tokenbudget" ]; then
        "$venv/bin/tokenbudget" uninstall
        config_dir="$("$venv/bin/python" -c 'from tokenbudget import paths; print(paths.config_dir())')"
    else
        echo "install.sh: no tokenbudget environment at $venv; nothing to unregister" >&2
        config_dir=""
    fi
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$venv/bin/tokenbudget" ]; then
        rm -f "$link"
    fi
    rm -rf "$venv"
    if [ "$purge" = 1 ]; then
        rm -rf "$data"
        [ -n "$config_dir" ] && rm -rf "$config_dir"
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
case ":$PATH:" in
    *":$bindir:"*) ;;
    *) echo "note: $bindir is not on your PATH; add it to use the tokenbudget command." ;;
esac

"$venv/bin/tokenbudget" install
echo "tokenbudget is installed. Set a budget, e.g.: tokenbudget budget set daily 500k"
