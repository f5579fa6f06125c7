#!/usr/bin/env bash
# shellcheck shell=bash
#
# install.sh: take a bare Linux box to a verified, talking FlagAlpha/Llama2-Chinese model.
#
#   ./install.sh [options]            run from an unpacked llama-bootstrap release / checkout
#   ./install.sh --help
#
# What it does, in order (install.ps1 mirrors it function for function):
#   find conda/mamba/micromamba, else download a pinned, sha256-checked Miniforge3 and install it
#   unattended; ask conda where the env lives (or goes); check the prerequisites (git, disk) before
#   any download; create the conda env by that prefix from the explicit lock conda-<platform>.lock
#   (or keep it if it already matches); pip-install the hash-locked layer
#   requirements/<platform>-<torch>.txt inside it; install the bootstrapper; hand off to
#   `llama-bootstrap run` (or `llama-bootstrap demo`) and exit with its exit code.
# Every setting is an environment variable (LLAMA_BOOTSTRAP_*); flags are conveniences over them.
# Exit codes: 0 ok, 1 a step failed, 2 bad input, 3 locked, 130 interrupted (the CLI's, passed through).
# Reference: docs/installers.md.
#
# Step table (install.sh <-> install.ps1); tests/installers/test_installer_static.py reads it:
#   parse_args             <-> Read-Options
#   from_bundle            <-> Install-FromBundle
#   detect_platform        <-> Get-Platform
#   select_locks           <-> Select-Locks
#   find_conda             <-> Find-Conda
#   check_prerequisites    <-> Test-Prerequisites
#   start_log              <-> Start-Log
#   print_plan             <-> Write-Plan
#   install_miniforge      <-> Install-Miniforge
#   create_venv_fallback   <-> New-VenvFallback
#   create_env             <-> New-CondaEnv
#   install_pip_layer      <-> Install-PipLayer
#   install_bootstrapper   <-> Install-Bootstrapper
#   hand_off               <-> Invoke-HandOff

set -u

# ---- pinned constants -------------------------------------------------------------------------
MINIFORGE_VERSION="25.3.1-0"
# sha256 of the release assets of conda-forge/miniforge 25.3.1-0 (see docs/installers.md).
MINIFORGE_SHA256_LINUX_X86_64="376b160ed8130820db0ab0f3826ac1fc85923647f75c1b8231166e3d559ab768"
MINIFORGE_SHA256_LINUX_AARCH64="a57c9e3d6c0c449c0283fd07e0bfa30d95eb8d547a14e8dc06c606405d01a7f0"
MINIFORGE_URL_GLOBAL="https://github.com/conda-forge/miniforge/releases/download/${MINIFORGE_VERSION}"
# TUNA's mirror of the GitHub release assets (same files, same sha256).
MINIFORGE_URL_CN="https://mirrors.tuna.tsinghua.edu.cn/github-release/conda-forge/miniforge/${MINIFORGE_VERSION}"
# The channel URL the explicit conda locks are written against (rewritten for a profile mirror).
CONDA_FORGE_CHANNEL="https://conda.anaconda.org/conda-forge"
# The venv fallback's pip locks are for this Python (see requirements/demo-*.in).
FALLBACK_PYTHON="3.11"
# Retries after a failed download (install.ps1 uses the same number).
DOWNLOAD_RETRIES=3
# Free disk the env needs, in GB (conda layer + pip layer + pip's unpacking), by pip layer; see
# docs/installers.md. Linux cpu is the default index's CUDA-built torch, hence as big as cuda.
DISK_GB_CUDA=8
DISK_GB_CPU=8
DISK_GB_MINIFORGE=1
# The stamps and pointers an env carries (bootstrap/receipt.py reads the same names): conda: in
# conda-meta/, a venv: at its top.
STAMP_CONDA="llama-bootstrap-lock.sha256"
STAMP_PIP="llama-bootstrap-pip-lock.sha256"
PREVIOUS_POINTER="llama-bootstrap-previous"
HOME_POINTER="llama-bootstrap-home"
# The start-up files `conda init` may put its block into (under $HOME).
SHELL_RC_FILES=(.bashrc .bash_profile .profile .zshrc .config/fish/config.fish .tcshrc .xonshrc)

# ---- small vocabulary -------------------------------------------------------------------------
_colour() {
    if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then printf '\033[%sm' "$1"; fi
}

_log_line() {
    if [ -n "${LOG_FILE:-}" ]; then printf '%s\n' "$*" >>"$LOG_FILE" 2>/dev/null || true; fi
}

say() {
    printf '%sllama-bootstrap:%s %s\n' "$(_colour '1')" "$(_colour '0')" "$*" >&2
    _log_line "llama-bootstrap: $*"
}

warn() {
    printf '%swarning:%s %s\n' "$(_colour '1;33')" "$(_colour '0')" "$*" >&2
    _log_line "warning: $*"
}

# err MESSAGE [EXIT_CODE]: print, name the log, exit (1 a step failed, 2 bad input; see usage()).
err() {
    printf '%serror:%s %s\n' "$(_colour '1;31')" "$(_colour '0')" "$1" >&2
    _log_line "error: $1"
    if [ -n "${LOG_FILE:-}" ]; then
        printf 'the full log is in: %s\n' "$LOG_FILE" >&2
    fi
    exit "${2:-1}"
}

need_cmd() {
    if ! command -v "$1" >/dev/null 2>&1; then
        err "need '$1' (command not found); install it with your package manager and re-run"
    fi
}

# Run a command; its output goes to stderr and to the log; die with "command failed: ..." on failure.
ensure() {
    _log_line "+ $*"
    local rc
    if [ -n "${LOG_FILE:-}" ]; then
        "$@" 2>&1 | tee -a "$LOG_FILE" >&2
        rc=${PIPESTATUS[0]}
    else
        "$@" >&2
        rc=$?
    fi
    if [ "$rc" -eq 130 ]; then
        err "interrupted: $*" 130
    elif [ "$rc" -ne 0 ]; then
        err "command failed (exit $rc): $*"
    fi
}

# "1/true/yes/on" -> 1, "0/false/no/off/empty" -> 0, anything else is bad input.
as_bool() {
    case "$(printf '%s' "$2" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes | on) printf '1' ;;
        0 | false | no | off | '') printf '0' ;;
        *) err "$1 must be 0 or 1, got '$2'" 2 ;;
    esac
}

usage() {
    cat <<'EOF'
install.sh: provision a Linux GPU box and hand off to `llama-bootstrap run`.

Usage: ./install.sh [options]

Options (each one sets the environment variable named after it):
  --manifest PATH      LLAMA_BOOTSTRAP_MANIFEST      manifest path [<script dir>/manifest.yaml]
  --env-name NAME      LLAMA_BOOTSTRAP_ENV_NAME      conda env name [myenv]
  --model KEY          LLAMA_BOOTSTRAP_MODEL         model key [the manifest's]
  --profile NAME       LLAMA_BOOTSTRAP_PROFILE       global or cn (mirrors) [the manifest's]
  --conda-prefix DIR   LLAMA_BOOTSTRAP_CONDA_PREFIX  where Miniforge goes if no conda is found [$HOME/miniforge3]
  --torch KIND         LLAMA_BOOTSTRAP_TORCH         auto, cuda or cpu pip layer [auto: cuda when nvidia-smi works]
  --skip-download      LLAMA_BOOTSTRAP_SKIP_DOWNLOAD skip the model download (and the smoke test)
  --skip-smoke         LLAMA_BOOTSTRAP_SKIP_SMOKE    skip the smoke test
  --demo               LLAMA_BOOTSTRAP_DEMO          offline demo (tiny local model) instead of the real model
  --install-only       LLAMA_BOOTSTRAP_INSTALL_ONLY  install, then print the env's python on stdout; no hand-off
  --dry-run            LLAMA_BOOTSTRAP_DRY_RUN       print the plan, change nothing
  --yes                LLAMA_BOOTSTRAP_YES           unattended: allowed to replace a mismatched env
  --init-shell         LLAMA_BOOTSTRAP_INIT_SHELL    let conda edit your shell rc files
  --rollback           LLAMA_BOOTSTRAP_ROLLBACK      switch back to the env an update replaced (and forward again)
  --uninstall          LLAMA_BOOTSTRAP_UNINSTALL     remove what the install receipt says was created
                                                     (with --dry-run: list it; --yes: no question)
  --log PATH           LLAMA_BOOTSTRAP_LOG           log file [~/.local/state/llama-bootstrap/logs/...]
  --debug              LLAMA_BOOTSTRAP_DEBUG         trace every command (set -x), tracebacks
  --from-bundle FILE   LLAMA_BOOTSTRAP_FROM_BUNDLE   install offline from FILE (made by `llama-bootstrap bundle`):
                                                     verified first, then no network at all
  -h, --help           show this help

Exit codes: 0 ok; 1 a step or check failed; 2 bad input (flag, variable, manifest);
3 another llama-bootstrap run holds the lock; 130 interrupted. The hand-off's code is passed through.

The install receipt is <state folder>/receipt.json, the state folder being LLAMA_BOOTSTRAP_STATE_DIR
(relative to the manifest's folder) or .llama-bootstrap next to the manifest (docs/installers.md).

Test hook (no flag): LLAMA_BOOTSTRAP_MINIFORGE_URL, the base URL Miniforge is fetched from
(https; http only for 127.0.0.1/localhost).
EOF
}

# ---- steps ------------------------------------------------------------------------------------
parse_args() {
    ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)" || err "cannot find the script's folder"
    OPT_MANIFEST="${LLAMA_BOOTSTRAP_MANIFEST:-$ROOT_DIR/manifest.yaml}"
    OPT_ENV_NAME="${LLAMA_BOOTSTRAP_ENV_NAME:-myenv}"
    OPT_MODEL="${LLAMA_BOOTSTRAP_MODEL:-}"
    OPT_PROFILE="${LLAMA_BOOTSTRAP_PROFILE:-}"
    OPT_CONDA_PREFIX="${LLAMA_BOOTSTRAP_CONDA_PREFIX:-${HOME:?HOME is not set}/miniforge3}"
    OPT_TORCH="${LLAMA_BOOTSTRAP_TORCH:-auto}"
    OPT_SKIP_DOWNLOAD="$(as_bool LLAMA_BOOTSTRAP_SKIP_DOWNLOAD "${LLAMA_BOOTSTRAP_SKIP_DOWNLOAD:-0}")" || exit
    OPT_SKIP_SMOKE="$(as_bool LLAMA_BOOTSTRAP_SKIP_SMOKE "${LLAMA_BOOTSTRAP_SKIP_SMOKE:-0}")" || exit
    OPT_DEMO="$(as_bool LLAMA_BOOTSTRAP_DEMO "${LLAMA_BOOTSTRAP_DEMO:-0}")" || exit
    OPT_INSTALL_ONLY="$(as_bool LLAMA_BOOTSTRAP_INSTALL_ONLY "${LLAMA_BOOTSTRAP_INSTALL_ONLY:-0}")" || exit
    OPT_DRY_RUN="$(as_bool LLAMA_BOOTSTRAP_DRY_RUN "${LLAMA_BOOTSTRAP_DRY_RUN:-0}")" || exit
    OPT_YES="$(as_bool LLAMA_BOOTSTRAP_YES "${LLAMA_BOOTSTRAP_YES:-0}")" || exit
    OPT_INIT_SHELL="$(as_bool LLAMA_BOOTSTRAP_INIT_SHELL "${LLAMA_BOOTSTRAP_INIT_SHELL:-0}")" || exit
    OPT_ROLLBACK="$(as_bool LLAMA_BOOTSTRAP_ROLLBACK "${LLAMA_BOOTSTRAP_ROLLBACK:-0}")" || exit
    OPT_UNINSTALL="$(as_bool LLAMA_BOOTSTRAP_UNINSTALL "${LLAMA_BOOTSTRAP_UNINSTALL:-0}")" || exit
    OPT_LOG="${LLAMA_BOOTSTRAP_LOG:-}"
    OPT_DEBUG="$(as_bool LLAMA_BOOTSTRAP_DEBUG "${LLAMA_BOOTSTRAP_DEBUG:-0}")" || exit
    OPT_MINIFORGE_URL="${LLAMA_BOOTSTRAP_MINIFORGE_URL:-}"
    OPT_FROM_BUNDLE="${LLAMA_BOOTSTRAP_FROM_BUNDLE:-}"

    while [ "$#" -gt 0 ]; do
        local flag="$1" value=""
        case "$flag" in
            --*=*) value="${flag#*=}"; flag="${flag%%=*}" ;;
        esac
        case "$flag" in
            --manifest | --env-name | --model | --profile | --conda-prefix | --torch | --log | --from-bundle)
                if [ -z "$value" ]; then
                    [ "$#" -ge 2 ] || err "$flag needs a value (see --help)" 2
                    value="$2"
                    shift
                fi
                ;;
        esac
        case "$flag" in
            --manifest) OPT_MANIFEST="$value" ;;
            --env-name) OPT_ENV_NAME="$value" ;;
            --model) OPT_MODEL="$value" ;;
            --profile) OPT_PROFILE="$value" ;;
            --conda-prefix) OPT_CONDA_PREFIX="$value" ;;
            --torch) OPT_TORCH="$value" ;;
            --skip-download) OPT_SKIP_DOWNLOAD=1 ;;
            --skip-smoke) OPT_SKIP_SMOKE=1 ;;
            --demo) OPT_DEMO=1 ;;
            --install-only) OPT_INSTALL_ONLY=1 ;;
            --dry-run) OPT_DRY_RUN=1 ;;
            --yes) OPT_YES=1 ;;
            --init-shell) OPT_INIT_SHELL=1 ;;
            --rollback) OPT_ROLLBACK=1 ;;
            --uninstall) OPT_UNINSTALL=1 ;;
            --log) OPT_LOG="$value" ;;
            --debug) OPT_DEBUG=1 ;;
            --from-bundle) OPT_FROM_BUNDLE="$value" ;;
            -h | --help) usage; exit 0 ;;
            *) err "unknown option '$1' (see ./install.sh --help)" 2 ;;
        esac
        shift
    done

    case "$OPT_TORCH" in
        auto | cuda | cpu) ;;
        *) err "LLAMA_BOOTSTRAP_TORCH / --torch must be auto, cuda or cpu, got '$OPT_TORCH'" 2 ;;
    esac
    case "$OPT_PROFILE" in
        '' | global | cn) ;;
        *) err "LLAMA_BOOTSTRAP_PROFILE / --profile must be global or cn, got '$OPT_PROFILE'" 2 ;;
    esac
    case "$OPT_ENV_NAME" in
        '' | base | *[!A-Za-z0-9._-]*) err "env name '$OPT_ENV_NAME' is not allowed (letters, digits, . _ -; not 'base')" 2 ;;
    esac
    if [ -z "$OPT_FROM_BUNDLE" ] && { [ ! -f "$ROOT_DIR/pyproject.toml" ] || [ ! -d "$ROOT_DIR/requirements" ]; }; then
        err "run install.sh from an unpacked llama-bootstrap release (requirements/ and pyproject.toml next to it)"
    fi
    if [ -z "$OPT_FROM_BUNDLE" ] && [ "$OPT_DEMO" != 1 ] && [ ! -f "$OPT_MANIFEST" ]; then
        err "manifest not found: $OPT_MANIFEST (pass --manifest PATH or set LLAMA_BOOTSTRAP_MANIFEST)" 2
    fi
    if [ "$OPT_DEBUG" = 1 ]; then
        export LLAMA_BOOTSTRAP_DEBUG=1
        set -x
    fi
    # Isolation: nothing from the user's Python setup leaks into the env we build. PYTHONUTF8:
    # the env's Python reads and writes UTF-8 whatever the locale (the model answers in Chinese).
    export PYTHONNOUSERSITE=1 PYTHONUTF8=1
    unset PYTHONPATH PYTHONHOME PIP_USER PIP_REQUIRE_VIRTUALENV
    STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/llama-bootstrap"
}

detect_platform() {
    local os arch
    need_cmd uname
    os="$(uname -s)" || err "uname failed"
    arch="$(uname -m)" || err "uname failed"
    case "$os" in
        Linux) PLATFORM_OS="linux" ;;
        Darwin) err "macOS is not supported: the model needs an NVIDIA GPU (CUDA) or a Linux/Windows CPU box" ;;
        MINGW* | MSYS* | CYGWIN* | Windows_NT) err "on Windows run install.ps1 in PowerShell instead" ;;
        *) err "unsupported operating system '$os' (supported: Linux; Windows via install.ps1)" ;;
    esac
    case "$arch" in
        x86_64 | amd64) PLATFORM_ARCH="x86_64"; PLATFORM="linux-64"
            MINIFORGE_SHA256="$MINIFORGE_SHA256_LINUX_X86_64" ;;
        aarch64 | arm64) PLATFORM_ARCH="aarch64"; PLATFORM="linux-aarch64"
            MINIFORGE_SHA256="$MINIFORGE_SHA256_LINUX_AARCH64" ;;
        *) err "unsupported CPU architecture '$arch' (supported: x86_64, aarch64)" ;;
    esac
    MINIFORGE_FILE="Miniforge3-${MINIFORGE_VERSION}-Linux-${PLATFORM_ARCH}.sh"
}

select_locks() {
    TORCH_REASON="asked for"
    TORCH_KIND="$OPT_TORCH"
    if [ "$TORCH_KIND" = auto ]; then
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
            TORCH_KIND="cuda"; TORCH_REASON="auto: nvidia-smi found a GPU"
        else
            TORCH_KIND="cpu"; TORCH_REASON="auto: no working nvidia-smi"
        fi
    fi
    if [ "$TORCH_KIND" = cuda ]; then DISK_GB="$DISK_GB_CUDA"; else DISK_GB="$DISK_GB_CPU"; fi
    CONDA_LOCK="$ROOT_DIR/conda-${PLATFORM}.lock"
    PIP_LOCK="$ROOT_DIR/requirements/${PLATFORM}-${TORCH_KIND}.txt"
    FALLBACK_LOCK="$ROOT_DIR/requirements/demo-${PLATFORM}.txt"
    [ -f "$CONDA_LOCK" ] || err "no conda lock for $PLATFORM: $CONDA_LOCK is missing (this platform is detected but not locked yet)"
    [ -f "$PIP_LOCK" ] || err "no pip lock for $PLATFORM/$TORCH_KIND: $PIP_LOCK is missing (try --torch cpu)"
    if grep -q '^# llama-bootstrap: incomplete lock' "$PIP_LOCK"; then
        err "$PIP_LOCK is not fully hashed yet (see its header); re-lock it with 'llama-bootstrap lock' or use --torch cpu"
    fi
    # The profile in force: the flag/variable, else the manifest's top-level `profile:`.
    PROFILE="$OPT_PROFILE"
    if [ -z "$PROFILE" ] && [ -f "$OPT_MANIFEST" ]; then
        PROFILE="$(manifest_value "$OPT_MANIFEST" profile)"
    fi
    MINIFORGE_BASE_URL="$OPT_MINIFORGE_URL"
    if [ -z "$MINIFORGE_BASE_URL" ]; then
        if [ "$PROFILE" = cn ]; then MINIFORGE_BASE_URL="$MINIFORGE_URL_CN"; else MINIFORGE_BASE_URL="$MINIFORGE_URL_GLOBAL"; fi
    fi
    check_url "$MINIFORGE_BASE_URL"
    CONDA_MIRROR=""
    if [ -n "$PROFILE" ] && [ -f "$OPT_MANIFEST" ]; then
        CONDA_MIRROR="$(manifest_value "$OPT_MANIFEST" "profiles.$PROFILE.conda_channel")"
        if [ -n "$CONDA_MIRROR" ]; then check_url "$CONDA_MIRROR"; fi
    fi
}

# https only; plain http only for a loopback test server.
check_url() {
    case "$1" in
        https://*) ;;
        http://127.0.0.1:* | http://127.0.0.1/* | http://localhost:* | http://localhost/*) ;;
        *) err "refusing to download from '$1': only https:// URLs (http:// only for 127.0.0.1/localhost)" 2 ;;
    esac
}

# A scalar of the manifest by its dotted key (`profile`, `profiles.cn.conda_channel`), read line
# by line: two-space indentation, the value on the key's line; a comment starts at whitespace + #;
# quotes are dropped; a trailing CR (a file saved on Windows) is ignored. Prints nothing when absent.
# install.ps1's Read-ManifestValue follows the same rules (tests/installers/fixtures/manifest-values.*).
manifest_value() {
    awk -v want="$2" '
        BEGIN { n = split(want, keys, "."); depth = 0 }
        { sub(/\r$/, "") }
        /^ *(#.*)?$/ { next }
        {
            match($0, /^ */); indent = RLENGTH
            if (indent % 2) next
            level = indent / 2 + 1
            if (level > depth + 1) next
            depth = level - 1
            line = substr($0, indent + 1)
            if (index(line, keys[level] ":") != 1) next
            if (level < n) { depth = level; next }
            v = substr(line, length(keys[level]) + 2)
            sub(/^[ \t]+/, "", v)
            if (v ~ /^#/) v = ""
            sub(/[ \t]+#.*$/, "", v)
            sub(/[ \t]+$/, "", v)
            gsub(/["'"'"']/, "", v)
            print v
            exit
        }
    ' "$1"
}

find_conda() {
    CONDA_BIN=""
    CONDA_FOUND_VIA=""
    local candidate
    if [ -n "${CONDA_EXE:-}" ] && [ -x "${CONDA_EXE}" ]; then
        CONDA_BIN="$CONDA_EXE"; CONDA_FOUND_VIA="CONDA_EXE"
    fi
    if [ -z "$CONDA_BIN" ]; then
        for candidate in conda mamba micromamba; do
            if command -v "$candidate" >/dev/null 2>&1; then
                CONDA_BIN="$(command -v "$candidate")"; CONDA_FOUND_VIA="PATH"
                break
            fi
        done
    fi
    if [ -z "$CONDA_BIN" ]; then
        for candidate in "$OPT_CONDA_PREFIX" "$HOME/miniforge3" "$HOME/mambaforge" "$HOME/miniconda3" \
            "$HOME/anaconda3" /opt/conda /opt/miniforge3; do
            if [ -x "$candidate/bin/conda" ]; then
                CONDA_BIN="$candidate/bin/conda"; CONDA_FOUND_VIA="usual prefix"
                break
            fi
        done
    fi
    decide_env_prefix
}

# The one place that decides where the env lives: ENV_PREFIX, and why: ENV_WHY. conda's own rule
# for `--name`: an env of that name in one of its envs dirs, else the first writable envs dir
# (a read-only base such as /opt/conda, or `envs_dirs` in .condarc, move it to ~/.conda/envs or
# elsewhere). The env is then created and addressed by that prefix, never by name.
decide_env_prefix() {
    ENV_PREFIX=""
    ENV_WHY=""
    if [ -z "$CONDA_BIN" ]; then
        ENV_PREFIX="$OPT_CONDA_PREFIX/envs/$OPT_ENV_NAME"
        ENV_WHY="inside the Miniforge to be installed"
        return 0
    fi
    local info dirs dir skipped=""
    info="$("$CONDA_BIN" info --json 2>/dev/null)" || err "'$CONDA_BIN info --json' failed; is that conda working?"
    # conda and mamba 1 say envs_dirs; micromamba and mamba 2 say "envs directories".
    dirs="$(printf '%s' "$info" | json_string_list envs_dirs)"
    if [ -z "$dirs" ]; then dirs="$(printf '%s' "$info" | json_string_list 'envs directories')"; fi
    [ -n "$dirs" ] || err "'$CONDA_BIN info --json' names no envs directories; is that conda working?"
    while IFS= read -r dir; do
        if [ -d "$dir/$OPT_ENV_NAME/conda-meta" ]; then
            ENV_PREFIX="$dir/$OPT_ENV_NAME"; ENV_WHY="an env of that name in conda's envs dir $dir"
            return 0
        fi
    done <<EOF
$dirs
EOF
    while IFS= read -r dir; do
        if dir_is_writable "$dir"; then
            ENV_PREFIX="$dir/$OPT_ENV_NAME"
            ENV_WHY="conda's first writable envs dir${skipped:+ (not writable: $skipped)}"
            return 0
        fi
        skipped="${skipped:+$skipped, }$dir"
    done <<EOF
$dirs
EOF
    err "none of conda's envs directories is writable ($skipped);
add one you can write to (conda config --prepend envs_dirs DIR), or use a conda of your own"
}

# A folder we could create files in: it, or the nearest folder above it that exists.
dir_is_writable() {
    local d="$1"
    while [ ! -e "$d" ]; do
        case "$d" in / | . | '') return 1 ;; esac
        d="$(dirname "$d")"
    done
    [ -d "$d" ] && [ -w "$d" ] && [ -x "$d" ]
}

# The strings of the top-level array KEY of the JSON document on stdin, one a line (what conda and
# micromamba print for `info --json`: any layout; \uXXXX escapes, as conda writes non-ASCII paths,
# become UTF-8).
json_string_list() {
    LC_ALL=C awk -v want="$1" '
        function hexval(s,    i, c, v) {
            v = 0
            for (i = 1; i <= 4; i++) {
                c = index("0123456789abcdef", tolower(substr(s, i, 1)))
                if (c == 0) return -1
                v = v * 16 + c - 1
            }
            return v
        }
        function utf8(c) {
            if (c < 128) return sprintf("%c", c)
            if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
            if (c < 65536) return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
            return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64, 128 + int(c / 64) % 64, 128 + c % 64)
        }
        { text = text $0 "\n" }
        END {
            n = length(text); depth = 0; key = ""; last = ""; inlist = 0
            for (i = 1; i <= n; i++) {
                ch = substr(text, i, 1)
                if (ch == "\"") {
                    s = ""
                    for (i++; i <= n; i++) {
                        ch = substr(text, i, 1)
                        if (ch == "\"") break
                        if (ch != "\\") { s = s ch; continue }
                        e = substr(text, ++i, 1)
                        if (e == "u") {
                            c = hexval(substr(text, i + 1, 4)); i += 4
                            if (c >= 55296 && c < 56320 && substr(text, i + 1, 2) == "\\u") {
                                c = 65536 + (c - 55296) * 1024 + hexval(substr(text, i + 3, 4)) - 56320; i += 6
                            }
                            s = s utf8(c)
                        } else if (e == "n") s = s "\n"
                        else if (e == "t") s = s "\t"
                        else if (e == "r") s = s "\r"
                        else if (e == "b" || e == "f") s = s
                        else s = s e
                    }
                    if (inlist && depth == 2) print s
                    last = s
                } else if (ch == "{" || ch == "[") {
                    depth++
                    if (ch == "[" && depth == 2 && key == want) inlist = 1
                } else if (ch == "}" || ch == "]") {
                    if (inlist && depth == 2) exit
                    depth--
                } else if (ch == ":" && depth == 1) {
                    key = last
                } else if (ch == "," && depth == 1) {
                    key = ""
                }
            }
        }
    '
}

# Everything that can be known to fail is checked here, before any download: git (the model's
# source is cloned with it), free disk where the env goes, and a prefix Miniforge's installer takes.
check_prerequisites() {
    GIT_BIN="$(command -v git 2>/dev/null)" || GIT_BIN=""
    [ -n "$GIT_BIN" ] || err "need git (the model's source is cloned with it); install it with your package manager
(apt-get install git, dnf install git, ...) and re-run"
    local need_gb="$DISK_GB"
    if [ -z "$CONDA_BIN" ]; then
        # Miniforge's installer refuses a prefix with a space ("Cannot install into directories with spaces").
        case "$OPT_CONDA_PREFIX" in
            *' '*) err "the Miniforge prefix '$OPT_CONDA_PREFIX' contains a space, which Miniforge's installer refuses;
choose another with --conda-prefix DIR (e.g. --conda-prefix /opt/miniforge3, a folder you can write to)" 2 ;;
        esac
        if [ -e "$OPT_CONDA_PREFIX" ] && [ -n "$(ls -A "$OPT_CONDA_PREFIX" 2>/dev/null)" ]; then
            err "$OPT_CONDA_PREFIX exists but holds no conda; remove it or choose another --conda-prefix" 2
        fi
        need_gb=$((need_gb + DISK_GB_MINIFORGE))
    fi
    DISK_LINE="not checked (no df)"
    if command -v df >/dev/null 2>&1; then
        local at="$ENV_PREFIX" free_kb
        while [ ! -e "$at" ]; do at="$(dirname "$at")"; done
        free_kb="$(df -Pk "$at" 2>/dev/null | awk 'NR == 2 { print $4 }')"
        case "$free_kb" in
            '' | *[!0-9]*) DISK_LINE="not checked (df gave no number for $at)" ;;
            *)
                DISK_LINE="$((free_kb / 1048576)) GB free at $at (the env needs about $need_gb GB)"
                if [ "$free_kb" -lt $((need_gb * 1048576)) ]; then
                    err "not enough disk for the env: $DISK_LINE;
free some space there, or put the env on another disk (conda config --prepend envs_dirs DIR, or --conda-prefix DIR)"
                fi
                ;;
        esac
    fi
}

start_log() {
    if [ -n "$OPT_LOG" ]; then
        LOG_FILE="$OPT_LOG"
    else
        LOG_FILE="$STATE_DIR/logs/install-$(date +%Y%m%d-%H%M%S).log"
    fi
    mkdir -p "$(dirname "$LOG_FILE")" || err "cannot create the log folder for $LOG_FILE"
    : >>"$LOG_FILE" || err "cannot write the log file $LOG_FILE (choose another with --log)"
    need_cmd mktemp
    TMP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/llama-bootstrap.XXXXXX")" || err "mktemp failed"
    _log_line "install.sh started $(date) in $ROOT_DIR"
}

handoff_command() {
    HANDOFF=(-m bootstrap)
    if [ "$OPT_DEMO" = 1 ]; then
        HANDOFF+=(demo)
        return 0
    fi
    HANDOFF+=(run --manifest "$OPT_MANIFEST")
    if [ -n "$OPT_PROFILE" ]; then HANDOFF+=(--profile "$OPT_PROFILE"); fi
    if [ -n "$OPT_MODEL" ]; then HANDOFF+=(--model "$OPT_MODEL"); fi
    if [ "$OPT_SKIP_DOWNLOAD" = 1 ]; then HANDOFF+=(--skip pull --skip smoke)
    elif [ "$OPT_SKIP_SMOKE" = 1 ]; then HANDOFF+=(--skip smoke); fi
}

print_plan() {
    handoff_command
    local conda_line env_line
    if [ -n "$CONDA_BIN" ]; then
        conda_line="$CONDA_BIN (found via $CONDA_FOUND_VIA)"
    else
        conda_line="not found: will install Miniforge3 $MINIFORGE_VERSION into $OPT_CONDA_PREFIX"
    fi
    if [ ! -d "$ENV_PREFIX/conda-meta" ]; then
        env_line="$OPT_ENV_NAME at $ENV_PREFIX (will be created)"
    elif env_matches_lock; then
        env_line="$OPT_ENV_NAME at $ENV_PREFIX (exists, matches the lock: kept)"
    elif env_is_ours "$ENV_PREFIX"; then
        env_line="$OPT_ENV_NAME at $ENV_PREFIX (exists, made from other locks: the new env is built next to it"
        env_line="$env_line as $ENV_PREFIX-$(wanted_id), switched in after its test; the old one is kept for --rollback)"
    else
        env_line="$OPT_ENV_NAME at $ENV_PREFIX (exists, does not match the lock: replaced only with --yes)"
    fi
    {
        if [ "$OPT_DRY_RUN" = 1 ]; then echo "llama-bootstrap install plan (dry run: nothing is changed)"
        else echo "llama-bootstrap install plan"; fi
        echo "  platform:     $PLATFORM ($PLATFORM_OS $PLATFORM_ARCH)"
        echo "  conda:        $conda_line"
        if [ -z "$CONDA_BIN" ]; then
            echo "  miniforge:    $MINIFORGE_BASE_URL/$MINIFORGE_FILE"
            echo "  sha256:       $MINIFORGE_SHA256"
        fi
        echo "  environment:  $env_line"
        echo "  env prefix:   $ENV_WHY"
        echo "  git:          $GIT_BIN"
        echo "  disk:         $DISK_LINE"
        echo "  conda lock:   $CONDA_LOCK"
        if [ -n "$CONDA_MIRROR" ]; then echo "  conda mirror: $CONDA_MIRROR (profile $PROFILE)"; fi
        echo "  torch:        $TORCH_KIND ($TORCH_REASON)"
        echo "  pip lock:     $PIP_LOCK"
        echo "  bootstrapper: pip install --no-deps --no-build-isolation --no-index $ROOT_DIR"
        if [ "$OPT_INSTALL_ONLY" = 1 ]; then echo "  hand-off:     none (--install-only: the env's python is printed)"
        else echo "  hand-off:     <env python> ${HANDOFF[*]}"; fi
        if [ "$OPT_DEMO" = 1 ] && [ -z "$CONDA_BIN" ]; then
            echo "  fallback:     if Miniforge cannot be downloaded: a Python $FALLBACK_PYTHON venv at $STATE_DIR/venvs/$OPT_ENV_NAME-demo"
            echo "                with $FALLBACK_LOCK"
        fi
        if [ -n "${LOG_FILE:-}" ]; then echo "  log:          $LOG_FILE"; fi
    } | if [ -n "${LOG_FILE:-}" ]; then tee -a "$LOG_FILE"; else cat; fi
}

# Download $1 to $2 (curl, else wget); https only, http only for loopback test servers. A
# connection that does not open in 30 s, or stalls below 1 KB/s for 60 s, is retried.
downloader() {
    local url="$1" dest="$2" proto="=https"
    check_url "$url"
    case "$url" in http://*) proto="=http,https" ;; esac
    if command -v curl >/dev/null 2>&1; then
        curl -sSfL --proto "$proto" --proto-redir "$proto" --tlsv1.2 --retry "$DOWNLOAD_RETRIES" \
            --connect-timeout 30 --speed-time 60 --speed-limit 1024 -o "$dest" "$url"
    elif command -v wget >/dev/null 2>&1; then
        case "$url" in
            https://*) wget -q --https-only --secure-protocol=TLSv1_2 --tries=$((DOWNLOAD_RETRIES + 1)) \
                --connect-timeout=30 --read-timeout=60 -O "$dest" "$url" ;;
            *) wget -q --tries=$((DOWNLOAD_RETRIES + 1)) --connect-timeout=30 --read-timeout=60 -O "$dest" "$url" ;;
        esac
    else
        err "need curl or wget to download Miniforge; install one of them and re-run"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d ' ' -f 1
    else
        err "need sha256sum or shasum to verify downloads"
    fi
}

# Returns 1 (after a warning) only when the download itself failed; every other failure is fatal.
install_miniforge() {
    local url="$MINIFORGE_BASE_URL/$MINIFORGE_FILE" installer="$TMP_DIR/$MINIFORGE_FILE" got dl_err
    say "no conda found: downloading Miniforge3 $MINIFORGE_VERSION from $url"
    if ! dl_err="$(downloader "$url" "$installer.part" 2>&1)"; then
        rm -f "$installer.part"
        warn "could not download $url: ${dl_err:-no reason given}"
        return 1
    fi
    got="$(sha256_of "$installer.part")"
    if [ "$got" != "$MINIFORGE_SHA256" ]; then
        rm -f "$installer.part"
        err "checksum mismatch for $MINIFORGE_FILE from $MINIFORGE_BASE_URL
  want: $MINIFORGE_SHA256
  got:  $got
nothing was installed; check the mirror (LLAMA_BOOTSTRAP_MINIFORGE_URL / --profile) and re-run"
    fi
    mv "$installer.part" "$installer" || err "cannot move $installer.part into place"
    # An existing, empty prefix (made by hand, or a mount point): -b alone refuses any existing
    # path; -u ("update") accepts it. check_prerequisites refused a non-empty one.
    record_new "${MINIFORGE_TOP:-}" "$OPT_CONDA_PREFIX" miniforge
    say "sha256 verified; installing Miniforge into $OPT_CONDA_PREFIX"
    if [ -d "$OPT_CONDA_PREFIX" ]; then
        ensure bash "$installer" -b -u -p "$OPT_CONDA_PREFIX"
    else
        ensure bash "$installer" -b -p "$OPT_CONDA_PREFIX"
    fi
    CONDA_BIN="$OPT_CONDA_PREFIX/bin/conda"
    CONDA_FOUND_VIA="installed now"
    [ -x "$CONDA_BIN" ] || err "Miniforge installed but $CONDA_BIN is missing"
    if [ "$OPT_INIT_SHELL" = 1 ]; then
        init_shell_recorded
    else
        say "your shell rc files were left alone (pass --init-shell to let conda edit them)"
    fi
    # Ask the new conda (a ~/.condarc with envs_dirs applies to it too).
    decide_env_prefix
    say "the env goes to $ENV_PREFIX ($ENV_WHY)"
}

# Only reached with --demo, when no conda was found and Miniforge could not be downloaded.
create_venv_fallback() {
    local candidate found="" version
    for candidate in "python$FALLBACK_PYTHON" python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            version="$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || continue
            if [ "$version" = "$FALLBACK_PYTHON" ]; then found="$(command -v "$candidate")"; break; fi
        fi
    done
    [ -n "$found" ] || err "no conda, no Miniforge download, and no Python $FALLBACK_PYTHON for the --demo venv fallback;
install conda (or let the Miniforge download through), or install python$FALLBACK_PYTHON"
    [ -f "$FALLBACK_LOCK" ] || err "no venv-fallback lock for $PLATFORM: $FALLBACK_LOCK is missing"
    VENV_DIR="$STATE_DIR/venvs/$OPT_ENV_NAME-demo"
    warn "=================================================================================="
    warn "NO CONDA: --demo falls back to a plain Python venv. This is NOT the environment a"
    warn "real install uses (conda env from $(basename "$CONDA_LOCK")); it only runs the demo."
    warn "  python:   $found ($FALLBACK_PYTHON)"
    warn "  venv:     $VENV_DIR"
    warn "  pip lock: $FALLBACK_LOCK"
    warn "=================================================================================="
    ENV_KIND=venv
    ENV_PREFIX="$VENV_DIR"
    PIP_LOCK="$FALLBACK_LOCK"
    make_venv "$found"
}

# Does the env at $1 (default: the name) match the locks? conda: its conda-lock stamp; both kinds: its
# pip-layer stamp, when it has one (an env from before that stamp counts as matching).
env_matches_lock() {
    local meta pip
    meta="$(meta_dir "${1:-$ENV_PREFIX}")"
    if [ "$ENV_KIND" = conda ]; then
        [ -f "$meta/$STAMP_CONDA" ] && [ "$(stamp_of "$meta/$STAMP_CONDA")" = "$(sha256_of "$CONDA_LOCK")" ] || return 1
    fi
    pip="$(stamp_of "$meta/$STAMP_PIP")"
    [ -z "$pip" ] || [ "$pip" = "$(sha256_of "$PIP_LOCK")" ]
}

# The lock with its conda-forge URLs moved to the profile's mirror: plain string prefixes (no
# regular expression, so `&`, `|` or `#` in the mirror URL are taken literally).
rewrite_lock() {
    FROM="$CONDA_FORGE_CHANNEL/" TO="${CONDA_MIRROR%/}/" awk '
        BEGIN { from = ENVIRON["FROM"]; to = ENVIRON["TO"] }
        index($0, from) == 1 { print to substr($0, length(from) + 1); next }
        { print }
    ' "$1"
}

create_env() {
    ENV_PYTHON="$ENV_PREFIX/bin/python"
    if [ -d "$ENV_PREFIX/conda-meta" ]; then
        if env_matches_lock; then
            say "env $OPT_ENV_NAME already matches $(basename "$CONDA_LOCK"): keeping it"
            keep_env
            return 0
        fi
        if env_is_ours "$ENV_PREFIX"; then
            build_next_to_it
            return 0
        fi
        if [ "$OPT_YES" != 1 ]; then
            err "env $OPT_ENV_NAME at $ENV_PREFIX exists but was not made from $(basename "$CONDA_LOCK");
re-run with --yes to replace it, or pick another name with --env-name"
        fi
        say "env $OPT_ENV_NAME does not match the lock: removing it (--yes)"
        ensure "$CONDA_BIN" remove --yes --prefix "$ENV_PREFIX" --all
    fi
    conda_env_at "$ENV_PREFIX"
}

install_pip_layer() {
    say "installing the pip layer $(basename "$PIP_LOCK") (every file checked against its sha256)"
    ensure "$ENV_PYTHON" -m pip install --disable-pip-version-check --no-input --require-hashes \
        --no-deps --only-binary ':all:' -r "$PIP_LOCK"
}

install_bootstrapper() {
    say "installing the bootstrapper from $ROOT_DIR"
    # Its dependencies all came from the hashed pip layer; --no-index: nothing else is downloaded.
    ensure "$ENV_PYTHON" -m pip install --disable-pip-version-check --no-input --no-deps \
        --no-build-isolation --no-index "$ROOT_DIR"
}

# The CLI's exit code is the installer's: 1 a check or step failed, 2 bad input, 3 locked, 130 interrupted.
hand_off() {
    handoff_command
    say "handing off: $ENV_PYTHON ${HANDOFF[*]}"
    _log_line "+ $ENV_PYTHON ${HANDOFF[*]}"
    local rc=0 meaning
    "$ENV_PYTHON" "${HANDOFF[@]}" || rc=$?
    _log_line "hand-off exited with $rc"
    if [ "$rc" -ne 0 ]; then
        case "$rc" in
            1) meaning="a check or step failed" ;;
            2) meaning="bad input" ;;
            3) meaning="another llama-bootstrap run holds the lock" ;;
            130) meaning="interrupted" ;;
            *) meaning="unexpected" ;;
        esac
        err "llama-bootstrap ${HANDOFF[2]} failed (exit $rc: $meaning); its messages are above${UPDATE_NOTE:-}" "$rc"
    fi
    say "done. The environment is $ENV_PREFIX; log: $LOG_FILE"
}

# ---- offline install from a bundle (`llama-bootstrap bundle`; the format: bootstrap/bundle.py) ---------
# install.sh <-> install.ps1: from_bundle = Install-FromBundle, verify_bundle = Test-Bundle,
# bundle_field = Get-BundleField, isolate_pip = Set-PipIsolation, bundle_env = New-BundleEnv,
# install_bundle_miniforge = Install-BundleMiniforge, undo_bundle = Undo-Bundle.
BUNDLE_NAME_RE='^[A-Za-z0-9_.+@=,~][A-Za-z0-9_.+@=,~-]*(/[A-Za-z0-9_.+@=,~][A-Za-z0-9_.+@=,~-]*)*$'

# A top-level string, number or boolean of BUNDLE.json (the builder writes one top-level key per line:
# ` "key": value,`; deeper keys are indented more). Plain string comparison, no regular expression.
bundle_field() {
    LC_ALL=C awk -v key="$2" '
        index($0, " \"" key "\": ") == 1 {
            v = substr($0, length(key) + 6)
            if (substr(v, length(v)) == ",") v = substr(v, 1, length(v) - 1)
            if (substr(v, 1, 1) == "\"") v = substr(v, 2, length(v) - 2)
            print v
            exit
        }' "$1"
}

sha256_stdin() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 | cut -d ' ' -f 1
    else err "need sha256sum or shasum to verify the bundle"; fi
}

# Remove what verify_bundle made (the temp folder, and the folders it had to create) when it did not pass.
undo_bundle() {
    if [ -n "${BUNDLE_UNDO:-}" ]; then rm -rf -- "$BUNDLE_UNDO"; fi
}

# Check the bundle $1 and unpack it to $BUNDLE_DIR. Until every member has matched SHA256SUMS nothing but a temp
# folder (removed again on failure) is written. Sets BUNDLE_ID, BUNDLE_DIR, BUNDLE_INDEX.
verify_bundle() {
    local file="$1" listing names bad need free parent probe stage sums_out sum_cmd
    need_cmd tar
    need_cmd df
    [ -f "$file" ] || err "bundle not found: $file (pass --from-bundle FILE or set LLAMA_BOOTSTRAP_FROM_BUNDLE)"
    say "checking the bundle $file (nothing is changed before every member matches its sha256)"
    listing="$(LC_ALL=C tar -tvf "$file" 2>/dev/null)" || err "$file is not a readable tar archive (tar -tvf failed); nothing was changed"
    bad="$(printf '%s\n' "$listing" | grep -v '^-' | head -n 1)"
    [ -z "$bad" ] || err "the bundle holds something other than a regular file (links, devices and folders are refused); nothing was changed:
  $bad"
    names="$(LC_ALL=C tar -tf "$file")" || err "cannot list $file"
    bad="$(printf '%s\n' "$names" | grep -Ev "$BUNDLE_NAME_RE" | head -n 1)"
    [ -z "$bad" ] || err "the bundle has an unsafe member name '$bad' (absolute, '..' or odd characters); nothing was changed"
    bad="$(printf '%s\n' "$names" | grep -E '(^|/)\.\.?(/|$)' | head -n 1)"
    [ -z "$bad" ] || err "the bundle has an unsafe member name '$bad' (a '.' or '..' part); nothing was changed"
    bad="$(printf '%s\n' "$names" | LC_ALL=C sort -f | uniq -di | head -n 1)"
    [ -z "$bad" ] || err "the bundle holds '$bad' twice; nothing was changed"
    if ! printf '%s\n' "$names" | grep -qx 'SHA256SUMS' || ! printf '%s\n' "$names" | grep -qx 'BUNDLE.json'; then
        err "$file is not a llama-bootstrap bundle (no SHA256SUMS / BUNDLE.json)"
    fi
    BUNDLE_ID="$(tar -xOf "$file" SHA256SUMS | sha256_stdin)" || err "cannot read SHA256SUMS from $file"
    BUNDLE_DIR="$STATE_DIR/bundles/${BUNDLE_ID:0:16}"
    BUNDLE_INDEX="$BUNDLE_DIR/BUNDLE.json"
    if [ -d "$BUNDLE_DIR" ]; then
        say "bundle ${BUNDLE_ID:0:16} is already unpacked (and was verified) at $BUNDLE_DIR"
        return 0
    fi
    # Disk: the unpacked members take at most the size of the archive.
    need="$(wc -c <"$file" | tr -d ' ')"
    probe="$(dirname "$BUNDLE_DIR")"
    while [ ! -d "$probe" ]; do probe="$(dirname "$probe")"; done
    free="$(df -Pk "$probe" | awk 'NR == 2 { print $4 }')"
    if [ -z "$free" ] || [ $((free * 1024)) -lt "$need" ]; then
        err "not enough disk at $probe to unpack the bundle: need $((need / 1048576)) MiB, $((${free:-0} / 1024)) MiB free; nothing was changed"
    fi
    # Unpack into a temp folder next to the target; on failure it goes again, with the folders made for it.
    parent="$(dirname "$BUNDLE_DIR")"
    BUNDLE_UNDO=""
    if [ ! -d "$parent" ]; then
        BUNDLE_UNDO="$parent"
        while [ ! -d "$(dirname "$BUNDLE_UNDO")" ]; do BUNDLE_UNDO="$(dirname "$BUNDLE_UNDO")"; done
    fi
    trap 'undo_bundle; cleanup' EXIT
    mkdir -p "$parent" || err "cannot create $parent"
    stage="$(mktemp -d "$parent/.unpack-XXXXXX")" || err "cannot create a temp folder in $parent"
    BUNDLE_UNDO="${BUNDLE_UNDO:-$stage}"
    tar -xf "$file" -C "$stage" --no-same-owner || err "unpacking $file failed; nothing was changed"
    bad="$(LC_ALL=C comm -3 <(printf '%s\n' "$names" | grep -vx 'SHA256SUMS' | LC_ALL=C sort) \
        <(cut -c 67- "$stage/SHA256SUMS" | LC_ALL=C sort) | head -n 1)"
    [ -z "$bad" ] || err "member '${bad#"${bad%%[![:space:]]*}"}' is not both in the archive and in SHA256SUMS; nothing was changed"
    sum_cmd=(sha256sum -c --strict --quiet)
    if ! command -v sha256sum >/dev/null 2>&1; then sum_cmd=(shasum -a 256 -c --quiet); fi
    if ! sums_out="$(cd "$stage" && LC_ALL=C "${sum_cmd[@]}" SHA256SUMS 2>&1)"; then
        err "bundle member $(printf '%s\n' "$sums_out" | awk -F ': FAILED' 'NF > 1 { print $1; exit }') does not match its sha256 in SHA256SUMS; nothing was changed;
copy the bundle again (compare its sha256 with the FILE.sha256 written where it was built)"
    fi
    [ "$(bundle_field "$stage/BUNDLE.json" format)" = 1 ] ||
        err "BUNDLE.json format $(bundle_field "$stage/BUNDLE.json" format) is not 1: install it with the install.sh inside it"
    [ "$(bundle_field "$stage/BUNDLE.json" platform)" = "$PLATFORM" ] ||
        err "the bundle is for $(bundle_field "$stage/BUNDLE.json" platform), this machine is $PLATFORM; nothing was changed"
    say "every member matches SHA256SUMS (bundle id $BUNDLE_ID)"
    if [ "$OPT_DRY_RUN" = 1 ]; then
        say "dry run: the bundle would be unpacked to $BUNDLE_DIR and installed; nothing was changed"
        return 0
    fi
    mv "$stage" "$BUNDLE_DIR" || err "cannot move the unpacked bundle to $BUNDLE_DIR"
    BUNDLE_UNDO=""
}

# pip for the offline install: the bundle's wheels only, no index, and no configuration of this machine.
isolate_pip() {
    local name
    for name in $(compgen -e); do
        case "$name" in PIP_*) unset "$name" ;; esac
    done
    export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_FIND_LINKS="$1" PIP_DISABLE_PIP_VERSION_CHECK=1
}

install_bundle_miniforge() {
    local installer="$1" got
    [ "$(basename "$installer")" = "$MINIFORGE_FILE" ] || err "the bundle's $(basename "$installer") is not the pinned $MINIFORGE_FILE"
    got="$(sha256_of "$installer")"
    [ "$got" = "$MINIFORGE_SHA256" ] || err "checksum mismatch for the bundle's $MINIFORGE_FILE
  want: $MINIFORGE_SHA256
  got:  $got"
    if [ -e "$OPT_CONDA_PREFIX" ] && [ -n "$(ls -A "$OPT_CONDA_PREFIX" 2>/dev/null)" ]; then
        err "$OPT_CONDA_PREFIX exists but holds no conda; remove it or choose another --conda-prefix"
    fi
    say "no conda found: installing Miniforge3 $MINIFORGE_VERSION from the bundle into $OPT_CONDA_PREFIX"
    ensure bash "$installer" -b -p "$OPT_CONDA_PREFIX"
    CONDA_BIN="$OPT_CONDA_PREFIX/bin/conda"
    CONDA_FOUND_VIA="installed from the bundle"
    decide_env_prefix  # ask the new conda where the env goes, as after a downloaded Miniforge
    say "the env goes to $ENV_PREFIX ($ENV_WHY)"
}

# The environment: conda from the bundle's packages (offline) when it has them and a conda is found or its
# Miniforge installed; otherwise the venv fallback, loudly, exactly as --demo does.
bundle_env() {
    local miniforge
    miniforge="$(bundle_field "$BUNDLE_INDEX" miniforge)"
    if [ "$(bundle_field "$BUNDLE_INDEX" conda)" = included ]; then
        find_conda
        if [ -z "$CONDA_BIN" ] && [ -n "$miniforge" ]; then install_bundle_miniforge "$BUNDLE_DIR/$miniforge"; fi
        if [ -n "$CONDA_BIN" ]; then
            PROFILE="bundle"
            CONDA_MIRROR="file://$BUNDLE_DIR/$(bundle_field "$BUNDLE_INDEX" conda_packages)"
            export CONDA_OFFLINE=true
            create_env
            return 0
        fi
        warn "the bundle has conda packages, but no conda was found and the bundle has no Miniforge installer"
    else
        warn "the bundle has no conda layer: $(bundle_field "$BUNDLE_INDEX" conda_reason)"
    fi
    FALLBACK_PYTHON="$(bundle_field "$BUNDLE_INDEX" python)"
    FALLBACK_LOCK="$PIP_LOCK"
    create_venv_fallback
}

# --from-bundle: verify, unpack, then install with no network at all and hand off to `run` on the bundle's
# manifest (source from the git bundle, weights through a dir source checked against the lock, smoke test).
from_bundle() {
    local stamp
    detect_platform
    verify_bundle "$OPT_FROM_BUNDLE"
    if [ "$OPT_DRY_RUN" = 1 ]; then return 0; fi
    ROOT_DIR="$BUNDLE_DIR"
    OPT_MANIFEST="$BUNDLE_DIR/$(bundle_field "$BUNDLE_INDEX" manifest)"
    receipt_begin  # the receipt sits in the bundle manifest's state folder: uninstall reads it there
    start_log
    record_log
    OPT_MODEL="$(bundle_field "$BUNDLE_INDEX" model)"
    OPT_PROFILE="bundle"
    OPT_DEMO=0
    CONDA_LOCK="$BUNDLE_DIR/$(bundle_field "$BUNDLE_INDEX" conda_lock)"
    PIP_LOCK="$BUNDLE_DIR/$(bundle_field "$BUNDLE_INDEX" pip_lock)"
    isolate_pip "$BUNDLE_DIR/$(bundle_field "$BUNDLE_INDEX" wheels)"
    # The bundle's weights, whatever this shell says (the bundle profile lists them as a dir source).
    unset LLAMA_BOOTSTRAP_SOURCES
    stamp="$BUNDLE_DIR/.llama-bootstrap-installed"
    ENV_PYTHON="$(awk 'index($0, "env_python=") == 1 { print substr($0, 12) }' "$stamp" 2>/dev/null)"
    ENV_PREFIX="$(awk 'index($0, "env_prefix=") == 1 { print substr($0, 12) }' "$stamp" 2>/dev/null)"
    if [ -n "$ENV_PYTHON" ] && [ -x "$ENV_PYTHON" ]; then
        say "bundle ${BUNDLE_ID:0:16} is installed in $ENV_PREFIX: nothing to install"
        hand_off
        return 0
    fi
    bundle_env
    install_pip_layer
    install_bootstrapper
    record_leftovers
    hand_off
    printf 'env_prefix=%s\nenv_python=%s\n' "$ENV_PREFIX" "$ENV_PYTHON" >"$stamp" || err "cannot write $stamp"
}

# ---- the life of an install: the receipt, updates, --rollback, --uninstall --------------------
# docs/installers.md "The life of an install". install.ps1 mirrors each function (the same name in
# PowerShell's Verb-Noun form, listed in tests/lifecycle/test_installers_static.py).

# The receipt is <the CLI's state folder>/receipt.json, the file `llama-bootstrap` writes too
# (bootstrap/receipt.py): LLAMA_BOOTSTRAP_STATE_DIR (relative: to the manifest's folder), else
# .llama-bootstrap next to the manifest; the CLI finds it from the same manifest.
receipt_locate() {
    local root dir="${LLAMA_BOOTSTRAP_STATE_DIR:-}"
    root="$(cd "$(dirname "$OPT_MANIFEST")" 2>/dev/null && pwd -P)" || err "cannot find the manifest's folder ($OPT_MANIFEST)"
    dir="${dir%/}"
    case "$dir" in
        '') dir="$root/.llama-bootstrap" ;;
        /*) ;;
        *) dir="$root/$dir" ;;
    esac
    RECEIPT="$dir/receipt.json"
}

# The topmost missing folder on the way to $1 ($1 itself when only it is missing); nothing when $1 exists.
first_missing() {
    local p="$1" top=""
    while [ ! -e "$p" ] && [ ! -L "$p" ]; do
        top="$p"
        case "$p" in / | . | '') break ;; esac
        p="$(dirname "$p")"
    done
    printf '%s' "$top"
}

json_escape() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '%s' "$s"
}

# Rewrite the receipt ($RECEIPT) with awk: $1 = the awk program's mode, the entry in ENTRY_KEY/ENTRY_LINE.
# The layout is bootstrap/receipt.py's: one entry per line; any other line means "not ours": exit 3.
receipt_awk() {
    local source="$RECEIPT"
    [ -f "$source" ] || source=/dev/null
    MODE="$1" KEY="$ENTRY_KEY" LINE="${ENTRY_LINE:-}" awk '
        BEGIN { mode = ENVIRON["MODE"]; key = ENVIRON["KEY"]; line = ENVIRON["LINE"]; n = 0; have = 0; bad = 0 }
        { sub(/\r$/, "") }
        /^    \{"path": / {
            e = $0; sub(/,$/, "", e); entries[++n] = e
            if (index(e, "    " key) == 1) { have = 1; found = e }
            next
        }
        $0 == "{" || $0 == "  \"receipt\": 1," || $0 == "  \"entries\": [" || $0 == "  ]" || $0 == "}" || $0 == "" { next }
        { bad = 1 }
        END {
            if (bad) exit 3
            if (mode == "status") {
                if (have && match(found, /"status": "[a-z]+"/)) print substr(found, RSTART + 11, RLENGTH - 12)
                exit 0
            }
            if (have) exit 4
            entries[++n] = "    " line
            print "{"; print "  \"receipt\": 1,"; print "  \"entries\": ["
            for (i = 1; i <= n; i++) print entries[i] (i < n ? "," : "")
            print "  ]"; print "}"
        }
    ' "$source"
}

# receipt_add PATH KIND created|found [EXTRA]: record PATH unless it is recorded already (the first record
# wins: what an earlier run created stays "created"). EXTRA: more `, "key": value` pairs, as JSON.
receipt_add() {
    [ -n "${RECEIPT:-}" ] || return 0
    local path="$1" tmp rc=0
    case "$path" in
        *[[:cntrl:]]*) warn "not recorded in the receipt (a control character in the path): $path"; return 0 ;;
    esac
    ENTRY_KEY="{\"path\": \"$(json_escape "$path")\","
    ENTRY_LINE="${ENTRY_KEY:0:${#ENTRY_KEY}-1}, \"kind\": \"$2\", \"status\": \"$3\", \"when\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"by\": \"installer\"${4:-}}"
    mkdir -p "$(dirname "$RECEIPT")" || err "cannot create the state folder $(dirname "$RECEIPT") for the receipt;
make it writable, or set LLAMA_BOOTSTRAP_STATE_DIR to another folder"
    tmp="$(mktemp "$RECEIPT.XXXXXX")" || err "cannot write next to the receipt $RECEIPT"
    receipt_awk add >"$tmp" || rc=$?
    case "$rc" in
        0) mv -f "$tmp" "$RECEIPT" || err "cannot replace the receipt $RECEIPT" ;;
        4) rm -f "$tmp" ;;
        *) rm -f "$tmp"
           err "the receipt $RECEIPT is not in llama-bootstrap's layout (edited by hand?); restore it or move it away" ;;
    esac
}

# created, found or nothing: what the receipt says of PATH.
receipt_status() {
    [ -n "${RECEIPT:-}" ] && [ -f "$RECEIPT" ] || return 0
    ENTRY_KEY="{\"path\": \"$(json_escape "$1")\"," receipt_awk status 2>/dev/null || true
}

# The paths of the receipt's entries whose kind matches the regular expression $1, one a line.
receipt_paths() {
    [ -f "$RECEIPT" ] || return 0
    KINDS="$1" awk '
        index($0, "    {\"path\": \"") == 1 && $0 ~ ("\"kind\": \"(" ENVIRON["KINDS"] ")\"") {
            s = substr($0, 15); out = ""
            for (i = 1; i <= length(s); i++) {
                c = substr(s, i, 1)
                if (c == "\\") { i++; out = out substr(s, i, 1); continue }
                if (c == "\"") break
                out = out c
            }
            print out
        }
    ' "$RECEIPT"
}

# record_new TOP PATH KIND [EXTRA]: PATH as found when TOP is empty (it was there before), else as created
# with every folder from TOP down to it as a created "folder". Called before the path is made, so that a
# failed step leaves its half-made path recorded too.
record_new() {
    local top="$1" path="$2" p
    if [ -z "$top" ]; then
        receipt_add "$path" "$3" found "${4:-}"
        return 0
    fi
    receipt_add "$path" "$3" created "${4:-}"
    p="$path"
    while [ "$p" != "$top" ]; do
        p="$(dirname "$p")"
        receipt_add "$p" folder created
        case "$p" in / | .) break ;; esac
    done
}

pip_cache_dir() {
    printf '%s' "${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}"
}

# Before anything is written: where the receipt goes (the state folder is recorded, and made), and what
# exists already of the paths this run may create.
receipt_begin() {
    local top
    receipt_locate
    top="$(first_missing "$(dirname "$RECEIPT")")"
    if [ -n "$OPT_LOG" ]; then LOG_TOP="$(first_missing "$(dirname "$OPT_LOG")")"; else LOG_TOP="$(first_missing "$STATE_DIR/logs")"; fi
    LOG_EXISTED=0
    if [ -n "$OPT_LOG" ] && [ -e "$OPT_LOG" ]; then LOG_EXISTED=1; fi
    BUILD_TOPS="$(first_missing "$ROOT_DIR/build")|$(ls -d "$ROOT_DIR"/*.egg-info 2>/dev/null)"
    PIP_CACHE_TOP="$(first_missing "$(pip_cache_dir)")"
    CONDA_DIR_TOP="$(first_missing "$HOME/.conda")"
    MINIFORGE_TOP="$(first_missing "$OPT_CONDA_PREFIX")"
    record_new "$top" "$(dirname "$RECEIPT")" state
    if [ -n "$top" ]; then chmod 700 "$(dirname "$RECEIPT")" 2>/dev/null || true; fi
}

record_log() {
    record_new "$LOG_TOP" "$(dirname "$LOG_FILE")" folder
    if [ "$LOG_EXISTED" = 1 ]; then receipt_add "$LOG_FILE" log found; else receipt_add "$LOG_FILE" log created; fi
}

# What installing left that it did not set out to make: pip's build of the bootstrapper in the release
# folder (build/, *.egg-info), pip's cache and ~/.conda when this install created them.
record_leftovers() {
    local egg
    if [ -n "${BUILD_TOPS%%|*}" ] && [ -d "$ROOT_DIR/build" ]; then receipt_add "$ROOT_DIR/build" build created; fi
    for egg in "$ROOT_DIR"/*.egg-info; do
        [ -d "$egg" ] || continue
        case "|${BUILD_TOPS#*|}|" in *"$egg"*) ;; *) receipt_add "$egg" build created ;; esac
    done
    if [ -n "$PIP_CACHE_TOP" ] && [ -d "$(pip_cache_dir)" ]; then record_new "$PIP_CACHE_TOP" "$(pip_cache_dir)" cache; fi
    if [ -n "$CONDA_DIR_TOP" ] && [ -d "$HOME/.conda" ]; then record_new "$CONDA_DIR_TOP" "$HOME/.conda" conda-dir; fi
}

# `llama-bootstrap demo` works in ./llama-bootstrap-demo (bootstrap/demo/scenario.py, DEFAULT_WORKDIR).
record_demo_workdir() {
    [ "$OPT_DEMO" = 1 ] || return 0
    local dir
    dir="$(pwd -P)/llama-bootstrap-demo"
    record_new "$(first_missing "$dir")" "$dir" demo
}

# A conda that was found: recorded as found (never removed). Miniforge installed now was recorded by
# install_miniforge before its installer ran (an existing empty prefix it went into is "found" too).
record_miniforge() {
    if [ -n "$CONDA_BIN" ] && [ "$CONDA_FOUND_VIA" != "installed now" ] &&
        [ -d "$(dirname "$(dirname "$CONDA_BIN")")/conda-meta" ]; then
        receipt_add "$(dirname "$(dirname "$CONDA_BIN")")" miniforge found
    fi
}

# `conda init` with --init-shell: a start-up file conda put its block into (it had none before) is recorded
# with its sha256 before the edit, so uninstall takes out exactly conda's block. install.ps1: the
# PowerShell profiles and conda's `#region conda initialize` block.
init_shell_recorded() {
    local rc f i extra
    local -a existed=() sums=() had=() tops=()
    for rc in "${SHELL_RC_FILES[@]}"; do
        f="$HOME/$rc"
        tops+=("$(first_missing "$(dirname "$f")")")
        if [ -f "$f" ]; then
            existed+=(true); sums+=("$(sha256_of "$f")")
            if grep -qxF '# >>> conda initialize >>>' "$f"; then had+=(1); else had+=(0); fi
        else
            existed+=(false); sums+=(""); had+=(0)
        fi
    done
    ensure "$CONDA_BIN" init "$(basename "${SHELL:-bash}")"
    for i in "${!SHELL_RC_FILES[@]}"; do
        f="$HOME/${SHELL_RC_FILES[$i]}"
        if [ ! -f "$f" ] || [ "${had[$i]}" != 0 ] || ! grep -qxF '# >>> conda initialize >>>' "$f"; then continue; fi
        extra=", \"file_existed\": ${existed[$i]}"
        if [ -n "${sums[$i]}" ]; then extra="$extra, \"sha256_before\": \"${sums[$i]}\""; fi
        receipt_add "$f" shell-startup-edit created "$extra"
        if [ -n "${tops[$i]}" ]; then record_new "${tops[$i]}" "$(dirname "$f")" folder; fi
    done
}

# Envs: the conda env (ENV_KIND=conda: stamps in conda-meta/) or the --demo venv (ENV_KIND=venv: stamps at
# its top). Each is stamped with the sha256 of the lock(s) it was made from; its id (for the name of an
# update's slot, <name>-<id>) is the first 12 hex digits of sha256("<conda sha>\n<pip sha>\n").
meta_dir() {
    if [ "$ENV_KIND" = conda ]; then printf '%s/conda-meta' "$1"; else printf '%s' "$1"; fi
}

stamp_of() {
    if [ -f "$1" ]; then head -n 1 "$1" | cut -d ' ' -f 1; fi
}

env_id_of() {
    local meta conda=""
    meta="$(meta_dir "$1")"
    if [ "$ENV_KIND" = conda ]; then conda="$(stamp_of "$meta/$STAMP_CONDA")"; fi
    printf '%s\n%s\n' "$conda" "$(stamp_of "$meta/$STAMP_PIP")" | sha256_of - | cut -c 1-12
}

wanted_id() {
    local conda=""
    if [ "$ENV_KIND" = conda ]; then conda="$(sha256_of "$CONDA_LOCK")"; fi
    printf '%s\n%s\n' "$conda" "$(sha256_of "$PIP_LOCK")" | sha256_of - | cut -c 1-12
}

# Made by our installer: it carries our lock stamp (conda), or it is our venv.
env_is_ours() {
    [ "$ENV_KIND" = venv ] || [ -f "$(meta_dir "$1")/$STAMP_CONDA" ]
}

# Where the env at $1 was built (it only works there: scripts carry its prefix); old envs: at the name.
env_home() {
    local file
    file="$(meta_dir "$1")/$HOME_POINTER"
    if [ -f "$file" ]; then head -n 1 "$file"; else printf '%s' "$ENV_PREFIX"; fi
}

# What the name ($ENV_PREFIX) leads to: the env itself, or through a symlink an update's slot.
current_env() {
    if [ -L "$ENV_PREFIX" ]; then readlink -f "$ENV_PREFIX"; elif [ -d "$ENV_PREFIX" ]; then printf '%s' "$ENV_PREFIX"; fi
}

env_extra() {
    local extra
    extra=", \"name\": \"$(json_escape "$ENV_PREFIX")\", \"pip_lock\": \"$(json_escape "$PIP_LOCK")\""
    if [ "$ENV_KIND" = conda ]; then extra="$extra, \"conda_lock\": \"$(json_escape "$CONDA_LOCK")\""; fi
    printf '%s' "$extra"
}

record_env() {
    local kind=env
    if [ "$ENV_KIND" = venv ]; then kind=venv; fi
    record_new "$(first_missing "$1")" "$1" "$kind" "$(env_extra)"
}

# The env at the name matches the locks: it is used as it is (through the symlink's target, so that pip
# writes that env's own prefix into the scripts it installs).
keep_env() {
    record_env "$ENV_PREFIX"
    ENV_TARGET="$(current_env)"
    ENV_PYTHON="$ENV_TARGET/bin/python"
}

# Create the conda env at $1 from the lock (recorded first), stamped with the lock's sha256.
conda_env_at() {
    local prefix="$1" lock="$CONDA_LOCK"
    record_env "$prefix"
    if [ -n "$CONDA_MIRROR" ]; then
        lock="$TMP_DIR/$(basename "$CONDA_LOCK")"
        say "profile $PROFILE: fetching conda packages from $CONDA_MIRROR"
        rewrite_lock "$CONDA_LOCK" >"$lock" || err "cannot write $lock"
    fi
    say "creating env $OPT_ENV_NAME at $prefix from $(basename "$CONDA_LOCK")"
    ensure "$CONDA_BIN" create --yes --prefix "$prefix" --file "$lock"
    [ -x "$prefix/bin/python" ] || err "conda created $OPT_ENV_NAME but $prefix/bin/python is missing"
    printf '%s  %s\n' "$(sha256_of "$CONDA_LOCK")" "$(basename "$CONDA_LOCK")" \
        >"$prefix/conda-meta/$STAMP_CONDA" || err "cannot write the env's lock stamp"
    printf '%s\n' "$prefix" >"$prefix/conda-meta/$HOME_POINTER" || err "cannot write into $prefix/conda-meta"
    ENV_TARGET="$prefix"
    ENV_PYTHON="$prefix/bin/python"
}

venv_at() {
    record_env "$1"
    ensure "$FALLBACK_BASE_PYTHON" -m venv "$1"
    printf '%s\n' "$1" >"$1/$HOME_POINTER" || err "cannot write into $1"
    ENV_TARGET="$1"
    ENV_PYTHON="$1/bin/python"
}

# The venv fallback: kept when it matches the lock (a venv from before the stamps counts as matching),
# built next to it when the lock changed.
make_venv() {
    FALLBACK_BASE_PYTHON="$1"
    if [ -x "$VENV_DIR/bin/python" ]; then
        if env_matches_lock "$VENV_DIR"; then keep_env; else build_next_to_it; fi
        return 0
    fi
    venv_at "$VENV_DIR"
}

# The locks changed: the new env is built next to the current one, as <name>-<id>; the current one is
# used until the new one has passed its test (finish_update). An env built for these locks before is
# used again: a slot as it is, an env parked by an update is switched back in.
build_next_to_it() {
    local slot
    slot="$ENV_PREFIX-$(wanted_id)"
    UPDATE_FROM="$(current_env)"
    if [ -d "$slot" ] && [ ! -L "$slot" ] && env_matches_lock "$slot"; then
        if [ "$(env_home "$slot")" != "$slot" ]; then
            say "an env for these locks was in use before and is kept at $slot: switching it back in"
            switch_env "$slot"
            keep_env
            return 0
        fi
        say "an env for these locks was built next to the current one before: using $slot"
        ENV_TARGET="$slot"
        ENV_PYTHON="$slot/bin/python"
    else
        if [ -e "$slot" ] || [ -L "$slot" ]; then
            [ "$(receipt_status "$slot")" = created ] || err "$slot exists but is not a finished env for these locks;
move it away and re-run"
            say "removing $slot: an unfinished env from an interrupted update"
            rm -rf -- "$slot" || err "cannot remove $slot"
        fi
        say "the locks changed: building the new env next to the current one ($UPDATE_FROM), at $slot;"
        say "the current one stays in use until the new one has passed its test"
        if [ "$ENV_KIND" = conda ]; then conda_env_at "$slot"; else venv_at "$slot"; fi
    fi
    UPDATE_SLOT="$slot"
    UPDATE_NOTE="; the new env $slot was NOT switched in: $ENV_PREFIX still leads to $UPDATE_FROM"
}

stamp_pip_layer() {
    printf '%s  %s\n' "$(sha256_of "$PIP_LOCK")" "$(basename "$PIP_LOCK")" \
        >"$(meta_dir "$ENV_TARGET")/$STAMP_PIP" || err "cannot write the env's pip-layer stamp"
}

# With an update pending: the new env must import the bootstrapper, torch and transformers.
check_new_env() {
    [ -n "$UPDATE_SLOT" ] || return 0
    say "testing the new env: importing the bootstrapper, torch and transformers"
    "$ENV_PYTHON" -c 'import bootstrap.cli, torch, transformers' >&2 ||
        err "the new env at $UPDATE_SLOT cannot import its libraries${UPDATE_NOTE}"
}

# Make the name ($ENV_PREFIX) lead to the env at $1, and record the env it led to as $1's previous one.
# An env is only ever used at the prefix it was built at: one built at the name is moved aside ("parked"
# as <name>-<id>) while another is switched in through a symlink, and moved back when switched in again.
switch_env() {
    local target="$1" name="$ENV_PREFIX" current current_id="" park status tmp
    current="$(current_env)"
    if [ -n "$current" ]; then current_id="$(env_id_of "$current")"; fi
    if [ "$(env_home "$target")" = "$name" ]; then
        if [ -L "$name" ]; then rm -f "$name" || err "cannot remove the symlink $name"; fi
        [ ! -e "$name" ] || err "cannot switch $name back: it is not a symlink"
        mv "$target" "$name" || err "cannot move $target back to $name"
        target="$name"
    else
        if [ -d "$name" ] && [ ! -L "$name" ]; then
            park="$name-$current_id"
            if [ -e "$park" ] || [ -L "$park" ]; then err "cannot move the env at $name aside: $park exists"; fi
            status="$(receipt_status "$name")"
            mv "$name" "$park" || err "cannot move the env at $name aside to $park"
            receipt_add "$park" "$(if [ "$ENV_KIND" = venv ]; then echo venv; else echo env; fi)" "${status:-found}" "$(env_extra)"
        fi
        tmp="$name.switch-$$"
        ln -s "$target" "$tmp" || err "cannot make a symlink next to $name"
        mv -Tf "$tmp" "$name" || { rm -f "$tmp"; err "cannot point $name at $target"; }
    fi
    if [ -n "$current_id" ]; then
        printf '%s\n' "$current_id" >"$(meta_dir "$target")/$PREVIOUS_POINTER" || err "cannot write into $target"
    fi
}

# After the new env passed its test: switch it in; keep the one it replaces (for --rollback); remove
# older envs of ours (made by us, neither the current one nor its previous one).
finish_update() {
    [ -n "$UPDATE_SLOT" ] || return 0
    switch_env "$UPDATE_SLOT"
    UPDATE_NOTE=""
    say "switched: $ENV_PREFIX now leads to the new env $UPDATE_SLOT; the env it replaced is kept (--rollback switches back)"
    prune_envs
}

prune_envs() {
    local current current_id previous candidate id
    current="$(current_env)"
    current_id="$(env_id_of "$current")"
    previous="$(stamp_of "$(meta_dir "$current")/$PREVIOUS_POINTER")"
    for candidate in "$ENV_PREFIX"-*; do
        id="${candidate##*-}"
        case "$id" in *[!0-9a-f]* | '') continue ;; esac
        [ "${#id}" -eq 12 ] && [ -d "$candidate" ] && [ ! -L "$candidate" ] || continue
        [ "$(env_id_of "$candidate")" = "$id" ] && [ "$id" != "$current_id" ] && [ "$id" != "$previous" ] || continue
        [ "$(receipt_status "$candidate")" = created ] || continue
        say "removing $candidate: an env of an earlier update (the previous one is kept for --rollback)"
        rm -rf -- "$candidate" || warn "could not remove $candidate"
    done
}

# --rollback: switch the name back to the env it led to before the last switch (and forward again).
rollback_env() {
    local venv="$STATE_DIR/venvs/$OPT_ENV_NAME-demo" current previous target
    if [ -f "$OPT_MANIFEST" ]; then receipt_locate; fi
    if { [ "$OPT_DEMO" = 1 ] || [ -z "$CONDA_BIN" ]; } && [ -d "$venv" ]; then
        ENV_KIND=venv; ENV_PREFIX="$venv"; PIP_LOCK="$FALLBACK_LOCK"
    elif [ -z "$CONDA_BIN" ] || [ ! -d "$ENV_PREFIX/conda-meta" ]; then
        err "nothing to roll back: no env $OPT_ENV_NAME at $ENV_PREFIX and no venv at $venv" 1
    fi
    current="$(current_env)"
    previous="$(stamp_of "$(meta_dir "$current")/$PREVIOUS_POINTER")"
    [ -n "$previous" ] || err "no previous env is recorded for $ENV_PREFIX (one is kept when an update switches to a new env)" 1
    target="$ENV_PREFIX-$previous"
    if [ ! -d "$target" ] || [ -L "$target" ] || [ "$(env_id_of "$target")" != "$previous" ]; then
        err "the previous env of $ENV_PREFIX is gone (it was at $target)" 1
    fi
    if [ "$OPT_DRY_RUN" = 1 ]; then
        say "dry run: --rollback would switch $ENV_PREFIX from $current to $target"
        return 0
    fi
    switch_env "$target"
    say "rolled back: $ENV_PREFIX leads to $(current_env) again; the env it replaced is kept (--rollback switches forward again)"
    printf '%s\n' "$(current_env)/bin/python"
}

# --uninstall: the CLI removes what the receipt says was created (bootstrap/uninstall.py), run with the
# python of an env the receipt lists (on Linux a process may delete its own env).
uninstall_install() {
    local py="" path rc=0
    local -a args
    receipt_locate
    [ -f "$RECEIPT" ] || err "no install receipt at $RECEIPT: --uninstall removes only what a receipt records as created;
pass the --manifest (or LLAMA_BOOTSTRAP_STATE_DIR) the install was made with: its state folder holds receipt.json" 1
    while IFS= read -r path; do
        if [ -n "$path" ] && [ -x "$path/bin/python" ] && "$path/bin/python" -c 'import bootstrap.uninstall' >/dev/null 2>&1; then
            py="$path/bin/python"
            break
        fi
    done <<EOF
$(receipt_paths 'env|venv')
EOF
    [ -n "$py" ] || err "no env listed in $RECEIPT can run llama-bootstrap any more; run \`llama-bootstrap uninstall
--manifest $OPT_MANIFEST\` from any environment that has llama-bootstrap (pip install $ROOT_DIR)" 1
    args=(-m bootstrap uninstall --manifest "$OPT_MANIFEST")
    if [ "$OPT_DRY_RUN" = 1 ]; then args+=(--dry-run); fi
    if [ "$OPT_YES" = 1 ]; then args+=(--yes); fi
    say "uninstalling: $py ${args[*]}"
    "$py" "${args[@]}" || rc=$?
    [ "$rc" -eq 0 ] || err "llama-bootstrap uninstall failed (exit $rc); its messages are above" "$rc"
}

cleanup() {
    if [ -n "${TMP_DIR:-}" ] && [ -d "$TMP_DIR" ]; then rm -rf "$TMP_DIR"; fi
}

main() {
    LOG_FILE=""
    TMP_DIR=""
    VENV_DIR=""
    ENV_KIND=conda
    RECEIPT=""
    UPDATE_SLOT=""
    UPDATE_NOTE=""
    trap cleanup EXIT
    trap 'err "interrupted" 130' INT
    parse_args "$@"
    if [ -n "$OPT_FROM_BUNDLE" ]; then
        from_bundle
        return 0
    fi
    if [ "$OPT_UNINSTALL" = 1 ]; then
        uninstall_install
        return 0
    fi
    detect_platform
    select_locks
    find_conda
    if [ "$OPT_ROLLBACK" = 1 ]; then
        rollback_env
        return 0
    fi
    check_prerequisites
    if [ "$OPT_DRY_RUN" != 1 ]; then
        receipt_begin
        start_log
        record_log
    fi
    print_plan
    if [ "$OPT_DRY_RUN" = 1 ]; then
        return 0
    fi
    if [ -z "$CONDA_BIN" ]; then
        if ! install_miniforge; then
            if [ "$OPT_DEMO" = 1 ]; then
                create_venv_fallback
            else
                err "no conda found and Miniforge could not be downloaded from $MINIFORGE_BASE_URL;
check the network or proxy, try --profile cn, or set LLAMA_BOOTSTRAP_MINIFORGE_URL to a mirror of the same file"
            fi
        fi
    fi
    record_miniforge
    if [ -z "$VENV_DIR" ]; then
        create_env
    fi
    install_pip_layer
    stamp_pip_layer
    install_bootstrapper
    record_leftovers
    check_new_env
    if [ "$OPT_INSTALL_ONLY" = 1 ]; then
        finish_update
        say "installed (--install-only); the env's python is on stdout; log: $LOG_FILE"
        printf '%s\n' "$ENV_PYTHON"
        return 0
    fi
    record_demo_workdir
    hand_off
    finish_update
}

main "$@" || exit 1
