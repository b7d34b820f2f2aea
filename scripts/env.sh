# Sourced by every script: where caches and build outputs live.
#
# Everything heavy lives outside the clone, under $AGENTD_CACHE (default
# ~/.cache/agentd), so a fresh clone on the same machine (CI) reuses the cargo
# build (FAISS alone takes minutes to compile), the Python virtualenv and the
# npm cache.

AGENTD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AGENTD_ROOT
export AGENTD_CACHE="${AGENTD_CACHE:-$HOME/.cache/agentd}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$AGENTD_CACHE/target}"
export AGENTD_VENV="${AGENTD_VENV:-$AGENTD_CACHE/venv}"
export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$AGENTD_CACHE/pip}"
export npm_config_cache="${npm_config_cache:-$AGENTD_CACHE/npm}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_update_notifier=false
export npm_config_fund=false
export npm_config_audit=false
mkdir -p "$AGENTD_CACHE"

if [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

log() { printf '\033[1m==> [%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
