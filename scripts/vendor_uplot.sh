#!/bin/sh
# Vendor uPlot (MIT, https://github.com/leeoniya/uPlot) into app/api/ui/vendor/, unmodified, from
# the npm registry: the console charts with it and must work offline under its strict CSP, so it
# is served from the package, never from a CDN. Bump VERSION, run this, and commit what changed
# (SHA256SUMS included; tests/api/test_console_api.py checks the files against it).
#
#     sh scripts/vendor_uplot.sh
set -eu
VERSION=1.6.32
OUT="$(cd "$(dirname "$0")/.." && pwd)/app/api/ui/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "uplot@$VERSION" >/dev/null
tar xzf "uplot-$VERSION.tgz"
mkdir -p "$OUT"
cp package/dist/uPlot.esm.js package/dist/uPlot.min.css "$OUT/"
cp package/LICENSE "$OUT/uPlot.LICENSE"
cd "$OUT"
echo "# uPlot $VERSION from https://registry.npmjs.org/uplot/-/uplot-$VERSION.tgz (scripts/vendor_uplot.sh)" > SHA256SUMS
sha256sum uPlot.esm.js uPlot.min.css uPlot.LICENSE >> SHA256SUMS
echo "vendored uPlot $VERSION into $OUT"
