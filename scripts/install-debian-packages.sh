#!/usr/bin/env bash
# Installs the Debian packages given as arguments when some are missing: as root directly,
# else with passwordless sudo; otherwise says what to install by hand. Never fails the build:
# only the augmenters need these packages, and their tests say so when they are absent.
set -u
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: not a Debian system; install by hand: ${missing[*]}" >&2; exit 0
fi
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "note: missing Debian packages; install them by hand: sudo apt-get install ${missing[*]}" >&2; exit 0
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
  || echo "note: apt-get could not install ${missing[*]}; install them by hand" >&2
exit 0
