#!/usr/bin/env bash
# Set up everything the app and its tests need on a Debian/Ubuntu machine:
# the Debian libraries (where we may install them) and a virtual environment in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# libportaudio2: sound devices; libsndfile1: sound files (soundfile's wheel also bundles it);
# espeak-ng, flite: speech synthesis for the separation tab's test voices; sox: audio conversion.
# fortunes-zh, fortunes, jargon-text, dict-devil: offline text the Chat tab's default model is trained on;
# fonts-wqy-microhei: a font with Chinese characters (its poems), where the desktop has none.
DEBIAN_PACKAGES="python3-venv libportaudio2 libsndfile1 espeak-ng flite sox pocketsphinx-testdata fortunes-zh fortunes jargon-text dict-devil fonts-wqy-microhei libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0"

need_debs=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_debs+=("$p")
  done
fi
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "Please install these Debian packages: ${need_debs[*]}" >&2
  else
    echo "Installing Debian packages: ${need_debs[*]}"
    $SUDO apt-get update -qq || true
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_debs[@]}"; then
      # one package this distribution lacks must not keep the others out: try them one by one
      for p in "${need_debs[@]}"; do
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$p" >/dev/null 2>&1 || \
          echo "Could not install $p; the app may still run (sound needs libportaudio2)." >&2
      done
    fi
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.playground-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
