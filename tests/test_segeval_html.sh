#!/usr/bin/env bash
# The 3D page renders: segeval compare writes 3d_s0000_<tag>.html for the example subject,
# headless Chromium (Debian `chromium`) loads it from disk with the network off, once with
# WebGL (SwiftShader) and once with the Canvas 2D fallback (?renderer=2d); each screenshot
# must show drawn meshes in the canvas area (pixels away from the background colour, on
# both the reference and the prediction side), and the page must report "[rendered]".
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
SHARED=${SEGKIT_SHARED:-../shared}
PY=${PYTHON:-/usr/bin/python3}
S=$SHARED/data/totalseg-example/s0000
[ -d "$S/segmentations" ] || { echo "skip: the example subject is not at $S"; exit 77; }
[ -x "$BIN/segeval" ] || { echo "FAIL: $BIN/segeval is not built"; exit 1; }
CHROME=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROME" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (apt-get install -y chromium) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || true
    CHROME=$(command -v chromium || true)
fi
[ -n "$CHROME" ] || { echo "skip: headless Chromium is not installed and could not be installed (apt-get install -y chromium)"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$BIN/segeval" compare "$S" "$S" --out "$T/r" --tag html --max-3d 1 -q >"$T/cmp.log" 2>&1 \
    || { echo "FAIL: segeval compare: $(cat "$T/cmp.log")"; exit 1; }
PAGE="$T/r/3d_s0000_html.html"
[ -s "$PAGE" ] || { echo "FAIL: no 3D page"; exit 1; }
fails=0
shoot() {   # name url extra-flags...
    local name=$1 url=$2; shift 2
    timeout 120 "$CHROME" --headless=new --no-sandbox --user-data-dir="$T/prof_$name" --hide-scrollbars \
        --no-first-run --disable-extensions --proxy-server=127.0.0.1:9 --virtual-time-budget=8000 \
        --window-size=1280,800 "$@" --screenshot="$T/$name.png" "$url" >"$T/$name.log" 2>&1
    timeout 120 "$CHROME" --headless=new --no-sandbox --user-data-dir="$T/prof_$name" --no-first-run \
        --disable-extensions --proxy-server=127.0.0.1:9 --virtual-time-budget=8000 "$@" --dump-dom "$url" \
        >"$T/$name.dom" 2>>"$T/$name.log"
    if [ ! -s "$T/$name.png" ]; then
        if grep -qiE "cannot open display|no usable sandbox|error while loading shared libraries" "$T/$name.log"; then
            echo "skip: chromium cannot run here: $(tail -2 "$T/$name.log")"; exit 77
        fi
        echo "FAIL $name: no screenshot: $(tail -5 "$T/$name.log")"; fails=$((fails + 1)); return
    fi
    if grep -q "\[rendered\]" "$T/$name.dom"; then echo "ok   $name: page reports [rendered]: $(grep -o 'id="status">[^<]*' "$T/$name.dom" | head -1)"
    else echo "FAIL $name: the page did not finish rendering"; fails=$((fails + 1)); fi
    "$PY" - "$T/$name.png" "$name" <<'EOF' || fails=$((fails + 1))
import struct, sys, zlib
path, name = sys.argv[1], sys.argv[2]
def read_png(p):   # 8-bit RGB/RGBA, non-interlaced (what Chromium writes)
    d = open(p, "rb").read()
    assert d[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, b"", 0
    while pos < len(d):
        n, = struct.unpack(">I", d[pos:pos + 4]); t = d[pos + 4:pos + 8]; c = d[pos + 8:pos + 8 + n]; pos += 12 + n
        if t == b"IHDR": w, h, bd, ct, _, _, il = struct.unpack(">IIBBBBB", c); assert bd == 8 and il == 0 and ct in (2, 6)
        elif t == b"IDAT": idat += c
    bpp = 3 if ct == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0; b = prev[i]; c = prev[i - bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line); prev = line
    return w, h, bpp, rows
w, h, bpp, rows = read_png(path)
x0 = 330                       # the side panel is 320 px wide; the canvas is the rest
bg = rows[h // 2][(w - 1) * bpp:(w - 1) * bpp + 3]   # right edge: background
def drawn(xa, xb):
    n = 0
    for y in range(60, h - 40):            # skip the Reference/Prediction labels and the status line
        r = rows[y]
        for x in range(xa, xb, 2):
            p = r[x * bpp:x * bpp + 3]
            if max(abs(p[k] - bg[k]) for k in range(3)) > 40: n += 1
    return n / (((xb - xa) // 2) * (h - 100))
mid = x0 + (w - x0) // 2
left, right = drawn(x0, mid), drawn(mid, w)
ok = left > 0.02 and right > 0.02
print(f"{'ok  ' if ok else 'FAIL'} {name}: {w}x{h} screenshot, background {tuple(bg)}, mesh pixels {100 * left:.1f}% "
      f"(reference side) / {100 * right:.1f}% (prediction side) of the canvas")
sys.exit(0 if ok else 1)
EOF
}
shoot webgl "file://$PAGE" --enable-unsafe-swiftshader --use-angle=swiftshader --ignore-gpu-blocklist
shoot canvas2d "file://$PAGE?renderer=2d" --disable-gpu
grep -q "WebGL" "$T/webgl.dom" || echo "note: WebGL was not available; the Canvas 2D fallback drew the page"
echo "test_segeval_html: $fails failure(s)"
[ $fails -eq 0 ]
