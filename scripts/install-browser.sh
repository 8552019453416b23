#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the browser tests, when we may (root, apt available).
# The browser tests skip (reported as skipped) when this cannot be done.
set -u
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: not root or no apt-get; browser tests will be skipped"; exit 0
fi
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
  || echo "install-browser: apt-get could not install chromium; browser tests will be skipped"
