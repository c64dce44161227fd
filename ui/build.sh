#!/bin/sh
# Vendors the dashboard's charting library (uPlot, pinned exactly in package.json and
# package-lock.json) into web/static/vendor/, where the server serves it from. The copied
# files are committed: the server needs no npm at run time. Run again after changing the pin.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/../web/static/vendor"
cd "$here"
npm ci --no-audit --no-fund --ignore-scripts
mkdir -p "$dest"
cp node_modules/uplot/dist/uPlot.iife.min.js "$dest/uPlot.iife.min.js"
cp node_modules/uplot/dist/uPlot.min.css "$dest/uPlot.min.css"
cp node_modules/uplot/LICENSE "$dest/uPlot.LICENSE"
echo "vendored uplot $(node -p 'require("./node_modules/uplot/package.json").version') into $dest"
