# Sourced by the scripts that install Python packages (setup-venv.sh, check-edge-install.sh, check-deploy.sh).
#   pyinstall PYTHON ARGS...   `pip install ARGS` into the venv of interpreter PYTHON
#   pylist PYTHON              its packages as name==version lines
#   have_uv                    true when uv is used
# Both use uv (parallel downloads, a fast resolver; it honours -c constraints like pip) when it can be had:
# it is installed from PyPI on first use into .cache/uv/tool, and its wheel cache is .cache/uv/cache (so the
# edge venvs reuse what the full install downloaded). If uv cannot be installed, or BOXINSPECT_PIP=1, pip does
# the same. A venv made with `python -m venv` keeps its pip either way.
_pyinstall_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_uv=""
_uv_failed=0
_find_uv() {
  [ -n "$_uv" ] && return 0
  [ "${BOXINSPECT_PIP:-0}" = 1 ] || [ "$_uv_failed" = 1 ] && return 1
  local dir=$_pyinstall_root/.cache/uv
  local tool=$dir/tool
  mkdir -p "$dir"
  # one installer at a time (.ci/run runs several install scripts at once)
  exec 9>"$dir/.lock"
  flock 9 2>/dev/null || true
  if [ ! -x "$tool/bin/uv" ] || ! "$tool/bin/uv" --version >/dev/null 2>&1; then
    rm -rf "$tool"
    if ! { python3 -m venv "$tool" && "$tool/bin/python" -m pip install -q uv; } >"$dir/install.log" 2>&1; then
      echo "(uv could not be installed, see $dir/install.log: installing with pip)" >&2
      rm -rf "$tool"
      exec 9>&-
      _uv_failed=1
      return 1
    fi
  fi
  exec 9>&-
  _uv=$tool/bin/uv
  export UV_CACHE_DIR="${UV_CACHE_DIR:-$dir/cache}"
}
have_uv() { _find_uv; }
pyinstall() {
  local py=$1
  shift
  if _find_uv; then
    # --compile-bytecode as pip does: with PYTHONDONTWRITEBYTECODE set, every process would otherwise compile
    # TensorFlow's sources again on import
    if "$_uv" pip install --compile-bytecode --python "$py" "$@"; then
      return 0
    fi
    # uv reads neither pip.conf nor PIP_* (local indexes, find-links): where only those reach the packages,
    # pip does this install
    echo "(uv could not install $*: installing with pip)" >&2
    "$py" -m pip install "$@"
  else
    "$py" -m pip install "$@"
  fi
}
pylist() {
  if _find_uv; then
    "$_uv" pip list --python "$1" --format=freeze 2>/dev/null
  else
    "$1" -m pip list --format=freeze 2>/dev/null
  fi
}
