#!/usr/bin/env bash
# Fetch real sample clips (made by nobody on this project) from Debian's python3-imageio package into a cache
# folder: cockatoo.mp4 (H.264 1280x720, 280 frames) and realshort.mp4 (H.264 320x240, 36 frames).
# Uses `apt-get download` + `dpkg -x`: no install, no root needed for the unpacking.
set -euo pipefail
dest=${1:-$HOME/.cache/samstream/clips}
mkdir -p "$dest"
if [ -s "$dest/cockatoo.mp4" ] && [ -s "$dest/realshort.mp4" ]; then
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download python3-imageio >/dev/null 2>&1; then
  # The package lists may be missing on a fresh machine.
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
  apt-get download python3-imageio >/dev/null
fi
dpkg -x python3-imageio_*.deb unpacked
src=unpacked/usr/lib/python3/dist-packages/imageio/resources/images
cp "$src/cockatoo.mp4" "$src/realshort.mp4" "$dest/"
echo "sample clips in $dest"
