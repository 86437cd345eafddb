#!/usr/bin/env bash
# HyperAdapt developer entry points. Every command does its own set-up first, so each one works
# on a fresh Debian 12 machine and is quick when the set-up is already done.
#
#   bash scripts/dev.sh setup     system packages, venv, Python dependencies
#   bash scripts/dev.sh test      set-up, then the whole test suite
#   bash scripts/dev.sh demo      set-up, then the Indian Pines demo through qgis_process
#   bash scripts/dev.sh package   dist/hyperadapt-<version>.zip for QGIS's "Install from ZIP"
#   bash scripts/dev.sh install [PROFILE_DIR]
#                                 copy the plugin into a QGIS profile and enable it
#   bash scripts/dev.sh bench NAME [ARGS]   run bench/NAME.py
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HYPERADAPT_VENV:-$ROOT/.venv}"
SYS_PY=/usr/bin/python3
APT_PACKAGES=(qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv
              python3-scipy python3-sklearn python3-matplotlib zip)

log() { printf '[hyperadapt] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

setup_system() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing system packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

deps_dir() {
    "$SYS_PY" "$ROOT/plugin/dependencies.py" --print-dir
}

pip_source_args() {
    # torch comes from a PyTorch index when one is named (CUDA builds), else from a local wheel
    # folder when the machine has one, else from PyPI's CPU/CUDA default for the platform.
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        printf -- '--extra-index-url\n%s\n' "$TORCH_INDEX_URL"
    elif [ -d /opt/wheels ]; then
        printf -- '--find-links\n/opt/wheels\n'
    fi
}

setup_python() {
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating venv $VENV (sees QGIS, GDAL and PyQt5 from the system)"
        "$SYS_PY" -m venv --system-site-packages "$VENV"
    fi
    local deps stamp want
    deps="$(deps_dir)"
    mkdir -p "$deps"
    # numpy stays Debian's: QGIS and GDAL are built against it.
    local constraints="$VENV/numpy-constraint.txt"
    "$SYS_PY" -c 'import numpy; print("numpy==" + numpy.__version__)' > "$constraints"
    mapfile -t src < <(pip_source_args)
    want="$(cat "$ROOT/requirements/runtime.txt" "$ROOT/requirements/dev.txt" "$constraints" \
            <(printf '%s\n' "${src[@]}") | sha256sum | cut -d' ' -f1)"
    stamp="$VENV/.hyperadapt-requirements"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return
    fi
    log "installing runtime requirements into $deps"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade \
        --target "$deps" -c "$constraints" "${src[@]}" -r "$ROOT/requirements/runtime.txt"
    if [ -d "$deps/numpy" ]; then
        log "error: numpy was installed into $deps; it would shadow Debian's numpy"; exit 1
    fi
    # The venv sees the same dependency folder that QGIS puts on sys.path.
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$deps" > "$site/hyperadapt-deps.pth"
    # Tests, benchmarks and the demo import the plugin as `hyperadapt`, whatever this checkout's
    # folder is called, through a link named like the installed plugin folder.
    mkdir -p "$VENV/pkgroot"
    ln -sfn "$ROOT" "$VENV/pkgroot/hyperadapt"
    echo "$VENV/pkgroot" > "$site/hyperadapt-plugin.pth"
    log "installing development requirements into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -c "$constraints" -r "$ROOT/requirements/dev.txt"
    echo "$want" > "$stamp"
}

setup() {
    setup_system
    setup_python
}

run_tests() {
    setup
    cd "$ROOT"
    export QT_QPA_PLATFORM=offscreen
    # Idle OpenMP threads sleep instead of spinning, which keeps torch fast on a busy machine.
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    # pytest exits 5 when it collected nothing: that is a failure here too.
    "$VENV/bin/python" -m pytest "$@"
}

package() {
    cd "$ROOT"
    local version out stage
    version="$(sed -n 's/^version=//p' metadata.txt)"
    mkdir -p dist
    out="$ROOT/dist/hyperadapt-$version.zip"
    stage="$(mktemp -d)"
    mkdir -p "$stage/hyperadapt"
    git ls-files -z --cached --others --exclude-standard | grep -zvE '^(tests|bench|scripts|requirements|docs|\.ci|dist)/|^\.git' \
        | xargs -0 -I{} cp --parents {} "$stage/hyperadapt/"
    cp requirements/runtime.txt "$stage/hyperadapt/requirements.txt"
    rm -f "$out"
    (cd "$stage" && zip -q -r "$out" hyperadapt)
    rm -rf "$stage"
    echo "$out"
}

install_plugin() {
    setup_system
    local profile="${1:-$HOME/.local/share/QGIS/QGIS3/profiles/default}"
    local zip_path
    zip_path="$(package)"
    mkdir -p "$profile/python/plugins"
    rm -rf "$profile/python/plugins/hyperadapt"
    (cd "$profile/python/plugins" && "$SYS_PY" -m zipfile -e "$zip_path" .)
    # qgis_process reads the profile from QGIS_CUSTOM_CONFIG_PATH's parent of profiles/.
    local config_root
    config_root="$(cd "$profile/../.." && pwd)"
    # qgis_process 3.22 exits 1 when the plugin is already enabled (a reinstall or an upgrade).
    local enabled
    enabled="$(QT_QPA_PLATFORM=offscreen QGIS_CUSTOM_CONFIG_PATH="$config_root" \
        qgis_process.bin plugins enable hyperadapt 2>&1)" || case "$enabled" in
        *"already enabled"*) ;;
        *) echo "$enabled" >&2; log "qgis_process could not enable the plugin"; exit 1 ;;
    esac
    log "installed into $profile/python/plugins/hyperadapt and enabled"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    setup) setup ;;
    test) run_tests "$@" ;;
    demo) setup; cd "$ROOT"; QT_QPA_PLATFORM=offscreen "$VENV/bin/python" -m bench.demo "$@" ;;
    package) package ;;
    install) install_plugin "$@" ;;
    bench) setup; name="$1"; shift; cd "$ROOT"; "$VENV/bin/python" -m "bench.$name" "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
