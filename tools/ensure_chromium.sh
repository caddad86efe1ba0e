#!/usr/bin/env bash
# Make sure a headless-capable Chromium is available for the HTML-report browser test
# (tests/test_infer_report_browser.py). Installs Debian's `chromium` package when it is missing.
# Never fails the caller: if it cannot install (no root, no apt, no network) it says so and exits 0;
# the browser test then skips with a clear reason.
set -u

for exe in chromium chromium-browser google-chrome; do
  if command -v "$exe" >/dev/null 2>&1; then
    echo "ensure_chromium: found $(command -v "$exe")"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: apt-get not available; install chromium yourself to run the report browser test"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "ensure_chromium: not root and no passwordless sudo; run 'sudo apt-get install -y chromium' to enable the browser test"
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure_chromium: installing Debian packages chromium + fonts-dejavu-core (quiet; text needs a font)..."
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
  # The package lists may be stale or absent on a fresh machine: refresh once and retry.
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  if ! $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
    echo "ensure_chromium: could not install chromium (apt-get failed); the browser test will be skipped"
    exit 0
  fi
fi

if command -v chromium >/dev/null 2>&1; then
  echo "ensure_chromium: installed $(command -v chromium)"
else
  echo "ensure_chromium: apt-get reported success but 'chromium' is not on PATH; the browser test will be skipped"
fi
exit 0
