#!/usr/bin/env bash
# Refreshes the dashboard's vendored front-end assets from the npm registry (`make assets`).
# Only this script needs Node/npm; `make run` and `.ci/run` serve the committed copies.
# Each tarball's integrity is checked against the registry's dist.integrity before it is used.
set -euo pipefail
cd "$(dirname "$0")/.."
HTMX_VERSION=2.0.11
AXE_VERSION=4.14.1
UPLOT_VERSION=1.6.32
TOPOJSON_CLIENT_VERSION=3.1.0
WORLD_ATLAS_VERSION=2.0.2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch NAME VERSION FILE-IN-PACKAGE DESTINATION
    local integrity tarball
    integrity=$(npm view "$1@$2" dist.integrity)
    (cd "$work" && npm pack --silent "$1@$2" >/dev/null)
    tarball=$(ls "$work"/*.tgz)
    if [ "sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)" != "$integrity" ]; then
        echo "integrity mismatch for $1@$2" >&2; exit 1
    fi
    tar -xzf "$tarball" -C "$work" "package/$3"
    cp "$work/package/$3" "$4"
    rm -rf "$work/package" "$tarball"
    echo "$1@$2 $integrity $(basename "$4") sha384-$(openssl dgst -sha384 -binary "$4" | base64 -w0)"
}

{
    echo "# name@version  npm-tarball-integrity  file  file-sri (written by deploy/vendor_assets.sh)"
    fetch htmx.org "$HTMX_VERSION" dist/htmx.min.js api/dashboard/static/vendor/htmx.min.js
    # the Analytics page: charts, the world map's TopoJSON decoder and the Natural Earth countries
    fetch uplot "$UPLOT_VERSION" dist/uPlot.iife.min.js api/dashboard/static/vendor/uPlot.iife.min.js
    fetch uplot "$UPLOT_VERSION" dist/uPlot.min.css api/dashboard/static/vendor/uPlot.min.css
    fetch topojson-client "$TOPOJSON_CLIENT_VERSION" dist/topojson-client.min.js \
        api/dashboard/static/vendor/topojson-client.min.js
    fetch world-atlas "$WORLD_ATLAS_VERSION" countries-110m.json api/dashboard/static/vendor/countries-110m.json
} > api/dashboard/static/vendor/VERSIONS
{
    echo "# name@version  npm-tarball-integrity  file  file-sri (written by deploy/vendor_assets.sh)"
    fetch axe-core "$AXE_VERSION" axe.min.js tests/dashboard/vendor/axe.min.js
} > tests/dashboard/vendor/VERSIONS
