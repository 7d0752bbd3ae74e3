#!/usr/bin/env bash
# The command-line conventions across the programs (common/cli.h), end to end on a small
# phantom set:
#  1. --opt=value gives the same result as --opt value (segprep caches compared record by
#     record through `segprep stat`, synthct outputs byte for byte); -- ends the options.
#  2. Every subcommand's --help prints its own usage with an example (exit 0).
#  3. Refusals (exit 2, the option named): a flag given a value, an unknown option, an option
#     the subcommand does not use.
#  4. -q silences the summary lines of every program.
#  5. Progress bars (forced with --progress, stderr a file, COLUMNS=60) never exceed the
#     width - 1: every \r-separated piece of a line fits.
#  6. segtrain --resume RUN_DIR resumes from the newest resumable checkpoint in it; a folder
#     without one is refused.
set -u
cd "$(dirname "$0")/.."
BIN=${SEGKIT_BIN:-bin}
for p in segprep segtrain segeval synthct; do [ -x "$BIN/$p" ] || { echo "FAIL: $BIN/$p is not built"; exit 1; }; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
expect_fail() {   # NAME CODE PATTERN CMD...
    local name=$1 code=$2 pat=$3; shift 3
    "$@" >"$T/out.txt" 2>"$T/err.txt"
    local rc=$?
    if [ $rc -eq "$code" ] && grep -qE -- "$pat" "$T/err.txt"; then ok "$name: exit $rc: $(head -c 200 "$T/err.txt")"
    else bad "$name: exit $rc (want $code), stderr: $(head -c 400 "$T/err.txt")"; fi
}

# 1. --opt=value == --opt value; --
"$BIN/synthct" -q --subjects 3 --size 48x48x10 --seed 5 "$T/a" &&
"$BIN/synthct" -q --subjects=3 --size=48x48x10 --seed=5 --out="$T/b" || bad "synthct runs"
if diff -r "$T/a" "$T/b" >/dev/null; then ok "synthct: --opt=value output == --opt value output"; else bad "synthct outputs differ"; fi
"$BIN/segprep" -q --size 32 --threads 1 "$T/a" "$T/c1" && "$BIN/segprep" -q --size=32 --threads=1 -- "$T/a" "$T/c2" ||
    bad "segprep runs"
s1=$("$BIN/segprep" stat "$T/c1" | grep -vE '"cache"|bytes|"created"'); s2=$("$BIN/segprep" stat "$T/c2" | grep -vE '"cache"|bytes|"created"')
if [ -n "$s1" ] && [ "$s1" = "$s2" ]; then ok "segprep: --size=32 -- DATASET CACHE == --size 32 DATASET CACHE"
else bad "segprep stat differs"; fi

# 2. help per subcommand
for cmd in "segprep --help" "segprep stat --help" "segprep verify --help" "segprep export --help" "segtrain --help" \
           "segtrain forward --help" "synthct --help"; do
    # shellcheck disable=SC2086
    out=$("$BIN"/$cmd 2>&1); rc=$?
    first=$(echo "$out" | grep -m1 -i usage)
    sub=$(echo "$cmd" | awk '{print $2}')
    if [ $rc -eq 0 ] && echo "$out" | grep -q "example" && { [ "$sub" = --help ] || echo "$first" | grep -q "$sub"; }; then
        ok "$cmd: its own usage with an example"
    else bad "$cmd: exit $rc, first usage line '$first'"; fi
done

# 3. refusals
expect_fail "segprep --force=1" 2 "takes no value" "$BIN/segprep" --force=1 "$T/a" "$T/c3"
expect_fail "segprep unknown option" 2 "unknown option '--frobnicate'" "$BIN/segprep" --frobnicate "$T/a" "$T/c3"
expect_fail "segprep stat --threads" 2 "--threads is not an option of stat" "$BIN/segprep" stat "$T/c1" --threads 2
expect_fail "segprep run --check" 2 "--check belongs to segprep stat" "$BIN/segprep" "$T/a" "$T/c3" --check "$T/a"
expect_fail "segtrain forward --epochs" 2 "--epochs is not an option of forward" "$BIN/segtrain" forward a b c --epochs 2
expect_fail "segtrain --train-mode" 2 "--train-mode belongs to segtrain forward" "$BIN/segtrain" "$T/c1" --out "$T/r" --train-mode
expect_fail "synthct --force=yes" 2 "takes no value" "$BIN/synthct" --force=yes "$T/d"
[ ! -e "$T/c3" ] && [ ! -e "$T/d" ] && ok "refused commands wrote nothing" || bad "a refused command wrote output"

# 4. -q
out=$("$BIN/segprep" -q --size 32 "$T/a" "$T/c4" 2>&1); [ -z "$out" ] && ok "segprep -q prints nothing" || bad "segprep -q: $out"
out=$("$BIN/synthct" -q --subjects 1 --size 32x32x8 "$T/e" 2>&1); [ -z "$out" ] && ok "synthct -q prints nothing" || bad "synthct -q: $out"
out=$("$BIN/segtrain" -q "$T/c1" --out "$T/rq" --epochs 1 --features 4,8 --threads 1 2>&1)
[ -z "$out" ] && ok "segtrain -q prints nothing" || bad "segtrain -q: $out"

# 5. progress width
COLUMNS=60 "$BIN/segtrain" "$T/c1" --out "$T/rp" --epochs 2 --features 4,8 --threads 1 --progress 2>"$T/prog.txt" >/dev/null
long=$(tr '\r' '\n' <"$T/prog.txt" | sed 's/\x1b\[K//g' | grep '^epoch [0-9]*/2 .*slices/s' | grep -v 'train loss' | awk 'length > 59' | head -3)
nbar=$(grep -c 'epoch 1/2' "$T/prog.txt")
if [ "$nbar" -gt 0 ] && [ -z "$long" ]; then ok "segtrain --progress at COLUMNS=60: no piece longer than 59 characters"
else bad "progress lines ($nbar) too long for 60 columns: $long"; fi
COLUMNS=60 "$BIN/segprep" --progress --size 32 "$T/a" "$T/c5" 2>"$T/prog2.txt"
long=$(tr '\r' '\n' <"$T/prog2.txt" | sed 's/\x1b\[K//g' | grep '\[' | awk 'length > 59' | head -3)
[ -z "$long" ] && grep -q '\[' "$T/prog2.txt" && ok "segprep --progress fits 60 columns" || bad "segprep bar too long: $long"

# 6. --resume RUN_DIR
"$BIN/segtrain" -q "$T/c1" --resume "$T/rp" --epochs 3 --threads 1 || bad "segtrain --resume RUN_DIR"
grep -q '"epoch": *3' "$T/rp/training_history.json" 2>/dev/null || python3 -c "import json,sys; h=json.load(open('$T/rp/training_history.json')); sys.exit(0 if len(h['epochs'])==3 else 1)" 2>/dev/null
if [ -f "$T/rp/checkpoint_epoch3.safetensors" ]; then ok "--resume RUN_DIR continued from epoch 2 to 3"; else bad "no epoch 3 after --resume RUN_DIR"; fi
expect_fail "--resume a folder without checkpoints" 2 "holds no checkpoint_epochN" "$BIN/segtrain" "$T/c1" --resume "$T/a"

[ $fails -eq 0 ] && echo "test_cli.sh: all passed" || echo "test_cli.sh: $fails failed"
[ $fails -eq 0 ]
