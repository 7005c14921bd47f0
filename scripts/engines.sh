# shellcheck shell=bash
# Installs the engines and tools the tests run; sourced by scripts/test.
#
#   engines_install   install what is missing; exports TESSERA_TEST_PYTHON
#
# - espeak-ng, promtool (Debian's prometheus package, for the alert rules'
#   tests), and headless Chromium with its WebDriver (chromium and
#   chromium-driver, plus a font, for the website's browser tests), from
#   Debian's packages with apt-get when they are not on the PATH (as root;
#   otherwise it says what to install).
# - A Python virtualenv in target/engines-venv (ENGINES_VENV to override) with
#   the packages pinned in crates/testkit/py/requirements.txt: llama.cpp's
#   server, the GGUF writer, PocketSphinx, moto's S3 server, Schemathesis
#   (crates/scheduler/tests/schemathesis.rs runs it), localstripe (a
#   Stripe emulator, for the payment tests), and nudenet with onnxruntime
#   (the output classifier's model and runtime library, and its reference
#   in crates/moderation/tests). It is made
#   again only when that file changes, so a second run costs nothing. PYTHON
#   picks the interpreter (default python3, 3.10 or newer).
#
# TESSERA_TEST_PYTHON, the virtualenv's interpreter, is what the tests run the
# helper scripts of crates/testkit/py with.

ENGINES_VENV=${ENGINES_VENV:-target/engines-venv}
ENGINES_REQUIREMENTS=crates/testkit/py/requirements.txt

engines_install() {
  local start=$SECONDS
  engines_espeak || return 1
  engines_promtool || return 1
  engines_browser || return 1
  engines_venv || return 1
  export TESSERA_TEST_PYTHON
  TESSERA_TEST_PYTHON="$(cd "$ENGINES_VENV" && pwd)/bin/python"
  if [ $((SECONDS - start)) -gt 1 ]; then
    echo "engines installed in $((SECONDS - start)) s" >&2
  fi
}

engines_espeak() {
  engines_apt espeak-ng espeak-ng
}

engines_promtool() {
  engines_apt promtool prometheus
}

engines_browser() {
  engines_apt chromium chromium || return 1
  engines_apt chromedriver chromium-driver || return 1
  # Without recommends, Chromium may come without any font to draw text with.
  if ! fc-list 2>/dev/null | grep -qi dejavu; then
    engines_apt_package fonts-dejavu-core
  fi
}

# engines_apt COMMAND PACKAGE: installs PACKAGE with apt-get unless COMMAND runs.
engines_apt() {
  local command=$1 package=$2
  if command -v "$command" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "$command is not installed and this is not root: run 'apt-get install $package' as root, or run scripts/test as root" >&2
    return 1
  fi
  engines_apt_package "$package"
}

# engines_apt_package PACKAGE: installs PACKAGE with apt-get (as root).
engines_apt_package() {
  local package=$1
  if [ "$(id -u)" != 0 ]; then
    echo "run 'apt-get install $package' as root, or run scripts/test as root" >&2
    return 1
  fi
  echo "installing $package (apt-get)" >&2
  local log
  log=$(mktemp /tmp/tessera-apt.XXXXXX)
  if ! { apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package"; } \
      >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "installing $package failed" >&2
    return 1
  fi
  rm -f "$log"
}

engines_venv() {
  local venv=$ENGINES_VENV stamp=$ENGINES_VENV/.requirements
  if [ -x "$venv/bin/python" ] && cmp -s "$ENGINES_REQUIREMENTS" "$stamp"; then
    return 0
  fi
  local python=${PYTHON:-python3}
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "the real-engine tests need Python 3.10 or newer as '$python' (set PYTHON)" >&2
    return 1
  fi
  echo "installing the test engines' Python packages in $venv (pip)" >&2
  rm -rf "$venv"
  local pip
  if "$python" -m venv "$venv" >/dev/null 2>&1; then
    pip=("$venv/bin/python" -m pip)
  else
    # Debian's python3 without python3-venv has no ensurepip: make the venv
    # without pip and install into it with the interpreter's own pip.
    rm -rf "$venv"
    "$python" -m venv --without-pip "$venv" || return 1
    pip=("$python" -m pip --python "$venv/bin/python")
  fi
  if ! "${pip[@]}" install --disable-pip-version-check --no-input -q \
      -r "$ENGINES_REQUIREMENTS"; then
    echo "installing $ENGINES_REQUIREMENTS failed" >&2
    return 1
  fi
  cp "$ENGINES_REQUIREMENTS" "$stamp"
}
