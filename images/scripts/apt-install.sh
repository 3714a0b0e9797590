#!/bin/sh
# apt-install.sh PKG...: installs Debian packages without recommends and leaves no lists or
# caches in the layer. No packages (or a base without apt): nothing to do.
set -eu
[ $# -gt 0 ] || exit 0
command -v apt-get >/dev/null || { echo "apt-install.sh: no apt-get in this base; install $* there" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"
apt-get clean
rm -rf /var/lib/apt/lists/*
