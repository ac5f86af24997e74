#!/bin/sh
# Installs what the PyTorch peers in bench/peers need: Debian's python3-torch (PyTorch 1.13 for
# the system Python; pip wheels would need the internet and a matching CPU build). The benches
# run the peers with /usr/bin/python3 (or $FRESHET_PYTHON) and say `peer: "unavailable: ..."`
# when it is missing.
#
#   sudo sh scripts/install-peers.sh
set -eu
if /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
  echo "python3-torch is already installed: $(/usr/bin/python3 -c 'import torch; print(torch.__version__)')"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install PyTorch and numpy for a Python 3 of your choice and set FRESHET_PYTHON to it" >&2
  exit 1
fi
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# Another apt (unattended upgrades, a colleague) may hold the lock: wait for it, do not fight it.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y python3-torch python3-numpy
/usr/bin/python3 -c 'import torch; print("python3-torch", torch.__version__)'
