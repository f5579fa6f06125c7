#!/usr/bin/env bash
# Run every test suite from a fresh checkout: builds the test environments from the repo's own
# files (hashed requirements), lints, runs pytest on Python 3.11 (torch 2.13.0 CPU), then the
# Python 3.9 gate (the bootstrapper's own tests without torch, on a real 3.9) and the conda-lock
# tests. Both pytest runs are spread over one pytest-xdist worker per CPU core. Extra arguments
# go to the main pytest run, e.g. `scripts/run-tests.sh -x -k pull` (`-n 0` runs it serially).
set -euo pipefail

say() { printf 'run-tests: %s\n' "$*" >&2; }
err() { say "error: $*"; exit 1; }

find_python() {  # find_python 3.11 -> a path to that interpreter (plain, then pyenv)
    local want=$1 candidate root
    for candidate in "python$want" python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root)
        for candidate in "$root"/versions/"$want".*/bin/python"$want"; do
            [ -x "$candidate" ] && { printf '%s\n' "$candidate"; return 0; }
        done
    fi
    return 1
}

test_workers() {  # one pytest-xdist worker per core this process may use (at least 1)
    local n
    n=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
    [ "$n" -ge 1 ] 2>/dev/null || n=1
    printf '%s\n' "$n"
}

setup_venv() {  # setup_venv PYTHON DIR REQUIREMENTS [pip-args...]
    local python=$1 dir=$2 reqs=$3; shift 3
    if [ ! -x "$dir/bin/python" ]; then
        say "creating $dir with $("$python" --version 2>&1)"
        "$python" -m venv "$dir"
    fi
    say "installing $reqs into $dir"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install --quiet "$@" -r "$reqs"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
}

main() {
    cd "$(dirname "$0")/.."
    export PYTHONNOUSERSITE=1 HF_HUB_DISABLE_TELEMETRY=1
    unset PYTHONPATH PYTHONHOME HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_ENDPOINT
    local py311 py39 start=$SECONDS workers
    workers=(-n "$(test_workers)" --dist loadgroup)
    py311=$(find_python 3.11) || err "Python 3.11 not found (the test requirements are locked for it)"
    py39=$(find_python 3.9) || err "Python 3.9 not found: install it (pyenv install 3.9) for the 3.9 gate"

    setup_venv "$py311" .venv-test requirements/test.txt --require-hashes
    say "ruff (target py39)"
    .venv-test/bin/ruff check bootstrap tests
    say "pytest on $(.venv-test/bin/python --version), ${workers[1]} workers"
    .venv-test/bin/python -m pytest "${workers[@]}" "$@"

    setup_venv "$py39" .venv-py39 requirements/test-py39.txt --require-hashes
    say "Python 3.9 gate: the tests that need no torch, on $(.venv-py39/bin/python --version)"
    .venv-py39/bin/python -m pytest "${workers[@]}" -m "not torch" -q -p no:cacheprovider \
        --ignore=tests/installers --ignore=tests/test_conda_lock.py tests

    setup_venv "$py311" .venv-lock requirements/conda-lock-tests.txt --require-hashes
    say "conda-lock tests with conda-lock's own parser"
    .venv-lock/bin/python -m pytest -q -p no:cacheprovider tests/test_conda_lock.py
    say "all suites passed in $((SECONDS - start))s"
}

main "$@"
