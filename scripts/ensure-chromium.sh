#!/usr/bin/env bash
# Make sure a headless Chromium is on this machine, for the dashboard's browser test (cmd/batchctl, TestServeBrowser)
# and its screenshot. With BATCHCTL_CHROMIUM set to an executable, or one already on PATH, nothing is needed. On
# Debian/Ubuntu as root, installs Debian's chromium-headless-shell package. When it cannot, it says so and exits 0:
# the browser test then skips loudly, naming what is missing, and the rest of the suite still runs.
set -euo pipefail

found() {
  for bin in ${BATCHCTL_CHROMIUM:-} chromium-headless-shell chromium headless_shell chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
      return 0
    fi
  done
  [ -x /usr/lib/chromium/chromium-headless-shell ] || [ -x /usr/lib/chromium/headless_shell ]
}

if found; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no headless Chromium found and cannot install one (needs root and apt-get)." >&2
  echo "ensure-chromium: install Debian's chromium-headless-shell, or set BATCHCTL_CHROMIUM; the browser test will SKIP." >&2
  exit 0
fi

echo "installing chromium-headless-shell with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium-headless-shell fonts-dejavu-core >/dev/null; }; then
  echo "ensure-chromium: apt-get could not install chromium-headless-shell; the browser test will SKIP." >&2
  exit 0
fi
found || echo "ensure-chromium: chromium-headless-shell installed but no executable found; the browser test will SKIP." >&2
