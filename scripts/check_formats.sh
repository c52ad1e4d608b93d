#!/usr/bin/env bash
# Checks gsplat_py's splat files with PlayCanvas's own tool, splat-transform (not part of CI: it downloads
# the tool from the npm registry).
#
#     scripts/check_formats.sh MODEL [VERSION]      # MODEL: a training output folder or any model file
#
# Installs @playcanvas/splat-transform (VERSION, default "latest") into a temporary folder, then:
#   1. exports MODEL in every format gsplat_py writes (compressed PLY, SPZ version 4 and 3, SOG, .splat,
#      and the PLY), has splat-transform read each one and convert it to a PLY, and compares gsplat_py's
#      decoding of our file with that PLY, Gaussian by Gaussian (scripts/compare_splats.py: equal to float32
#      rounding). splat-transform reads and writes SPZ without the change of axes the SPZ specification
#      prescribes (RUB in the file, RDF in a PLY), so its PLY of our SPZ is compared turned half a turn
#      about x; .splat rotations are compared to 1/127.5 (splat-transform decodes a byte b as b/127.5 - 1,
#      the format's writers encode round(128 q + 128)).
#   2. has splat-transform write its own compressed PLY and SPZ from our PLY, and its SOG from the PLY's first
#      SOG_SAMPLE Gaussians (default 5000: its SH k-means runs on the CPU here, at a cost that grows with the
#      Gaussians times the palette), converts each to a PLY, and compares gsplat_py's decoding of its file
#      with its PLY the same way.
# Prints the tool's version and a Markdown table (BENCHMARKS.md, "Splat file formats"); exits 1 when a file
# is not read or a comparison fails.
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/check_formats.sh MODEL [VERSION]}
VERSION=${2:-latest}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=PASSIVE
PYTHON=${PYTHON:-python}

echo "installing @playcanvas/splat-transform@$VERSION into $WORK/npm"
npm install --prefix "$WORK/npm" --no-audit --no-fund --loglevel=error "@playcanvas/splat-transform@$VERSION" \
    || { echo "npm install failed"; exit 1; }
TOOL="$WORK/npm/node_modules/@playcanvas/splat-transform/bin/cli.mjs"
echo "splat-transform: $(node "$TOOL" --version 2>&1 | head -1), node $(node --version)"
splat_transform() { node "$TOOL" --quiet --overwrite "$@"; }

failures=0
compare() {  # compare.py arguments...; counts failures
    "$PYTHON" scripts/compare_splats.py "$@" || failures=$((failures + 1))
}
header() {
    echo
    echo "$1"
    echo
    echo "| file | Gaussians | positions | log-scales | opacities | SH DC | higher SH | rotations | |"
    echo "|---|---|---|---|---|---|---|---|---|"
}

mkdir -p "$WORK/ours" "$WORK/converted" "$WORK/theirs"
for spec in ply:model.ply compressed-ply:model.compressed.ply spz:model.spz spz3:model.v3.spz sog:model.sog \
            splat:model.splat; do
    format=${spec%%:*} name=${spec#*:} options=()
    [ "$format" = spz3 ] && format=spz options=(--spz-version 3)
    "$PYTHON" -m gsplat_py export --model "$MODEL" --format "$format" "${options[@]}" \
        --output "$WORK/ours/$name" >/dev/null || { echo "export as $format failed"; exit 1; }
done

header "splat-transform reads gsplat_py's files (max |difference| between our decoding and its PLY):"
for path in "$WORK"/ours/*; do
    name=$(basename "$path")
    if ! splat_transform "$path" "$WORK/converted/$name.ply" >"$WORK/log" 2>&1; then
        echo "| $name | splat-transform could not read it: $(tail -1 "$WORK/log") | | | | | | | FAIL |"
        failures=$((failures + 1))
        continue
    fi
    case "$name" in
        *.spz) compare "$path" "$WORK/converted/$name.ply" --flip-axes --label "$name (its PLY turned)" ;;
        *.splat) compare "$path" "$WORK/converted/$name.ply" --quat-tolerance 0.0079 ;;
        *) compare "$path" "$WORK/converted/$name.ply" ;;
    esac
done

header "gsplat_py reads splat-transform's files (max |difference| between our decoding and its PLY):"
"$PYTHON" - "$WORK/ours/model.ply" "$WORK/sample.ply" "${SOG_SAMPLE:-5000}" <<'PY' || exit 1
import sys
from dataclasses import fields, replace
from gsplat_py.io.ply import read_ply, write_ply
splats, count = read_ply(sys.argv[1]), int(sys.argv[3])
write_ply(sys.argv[2], replace(splats, **{f.name: getattr(splats, f.name)[:count] for f in fields(splats)}))
PY
theirs=(model.compressed.ply model.spz model.sog)
for name in "${theirs[@]}"; do
    source="$WORK/ours/model.ply"
    [ "$name" = model.sog ] && source="$WORK/sample.ply"
    if ! splat_transform --gpu cpu "$source" "$WORK/theirs/$name" >"$WORK/log" 2>&1 \
        || ! splat_transform "$WORK/theirs/$name" "$WORK/theirs/$name.ply" >"$WORK/log" 2>&1; then
        echo "| $name | splat-transform failed: $(tail -1 "$WORK/log") | | | | | | | FAIL |"
        failures=$((failures + 1))
        continue
    fi
    case "$name" in
        *.spz) compare "$WORK/theirs/$name" "$WORK/theirs/$name.ply" --flip-axes --label "$name (its, RDF in the file)" ;;
        *) compare "$WORK/theirs/$name" "$WORK/theirs/$name.ply" --label "$name (its)" ;;
    esac
done

echo
echo "sizes (MB):"
for path in "$WORK"/ours/* "${theirs[@]/#/$WORK/theirs/}"; do
    [ -f "$path" ] && echo "  ${path#"$WORK"/} $(stat -c %s "$path" | awk '{printf "%.2f", $1 / 1e6}')"
done
[ "$failures" = 0 ] && echo "all checks passed" || echo "$failures check(s) failed"
[ "$failures" = 0 ]
