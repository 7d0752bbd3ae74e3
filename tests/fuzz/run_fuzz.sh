#!/usr/bin/env bash
# make fuzz: build every tests/fuzz/fuzz_*.c with clang's libFuzzer + ASan + UBSan and run
# each for FUZZ_SECONDS (default 60) from a seed corpus made of our fixtures
# (FUZZ_TARGETS="nii ckpt" runs only those). A crash is
# copied into tests/fuzz/regressions/<target>/ (replayed by make test) and fails the run.
set -u
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-60}
OUT=build/fuzz; mkdir -p "$OUT"
CC=${FUZZ_CC:-clang}
command -v "$CC" >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 1; }
FLAGS="-g -O1 -std=c11 -D_GNU_SOURCE -DSEG_VERSION=\"fuzz\" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
INC="-Icommon -Icommon/nn -Icommon/gpu -I/usr/include/x86_64-linux-gnu/openblas-pthread"
LIBS="-L/usr/lib/x86_64-linux-gnu/openblas-pthread -llmdb -lzstd -lz -lcjson -lpng -lopenblas -lm -pthread"
SRCS=$(ls common/*.c common/nn/*.c)
# seed corpora
mkdir -p "$OUT/corpus/record" "$OUT/corpus/split" "$OUT/corpus/nii" "$OUT/corpus/safetensors" "$OUT/corpus/ckpt"
build/tests/test_cache --corpus "$OUT/corpus/record" >/dev/null 2>&1 || true
printf 'image_id;split\ns0000;train\ns0001;val\n' > "$OUT/corpus/split/a.csv"
printf '\xef\xbb\xbfimage_id;age;split\r\ns0;1;test\r\n' > "$OUT/corpus/split/b.csv"
printf '{"liver": 0, "spleen": 1}' > "$OUT/corpus/split/c.json"
printf 'liver\n# c\nspleen\n' > "$OUT/corpus/split/d.txt"
cp tests/fixtures/nii/*.nii* "$OUT/corpus/nii/" 2>/dev/null || true
cp tests/fixtures/*/*.safetensors "$OUT/corpus/safetensors/" 2>/dev/null || true
cp tests/fixtures/ckpt/model.safetensors "$OUT/corpus/ckpt/" 2>/dev/null || true
total_fail=0
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c); tgt=${name#fuzz_}
    [ -z "${FUZZ_TARGETS:-}" ] || [[ " $FUZZ_TARGETS " == *" $tgt "* ]] || continue
    echo "== $name: building"
    if ! $CC $FLAGS $INC "$src" $SRCS $LIBS -o "$OUT/$name" 2>"$OUT/$name.build.log"; then
        echo "FAIL $name: build failed (see $OUT/$name.build.log)"; total_fail=$((total_fail+1)); continue
    fi
    corpus="$OUT/corpus/$tgt"; mkdir -p "$corpus" "$OUT/work_$tgt"
    reg="tests/fuzz/regressions/$tgt"; mkdir -p "$reg"
    echo "== $name: fuzzing ${SECS}s"
    (cd "$OUT/work_$tgt" && ASAN_OPTIONS=detect_leaks=1 "../$name" -max_total_time="$SECS" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 "../corpus/$tgt" ../../../"$reg" >"../$name.log" 2>&1); rc=$?
    grep -E "stat::number_of_executed_units|stat::peak_rss" "$OUT/$name.log" | sed "s/^/    /"
    if [ $rc -ne 0 ]; then
        total_fail=$((total_fail+1))
        for c in "$OUT/work_$tgt"/crash-* "$OUT/work_$tgt"/timeout-* "$OUT/work_$tgt"/oom-*; do
            [ -f "$c" ] && cp "$c" "$reg/" && echo "    new regression input: $reg/$(basename "$c")"
        done
        echo "FAIL $name (exit $rc), log: $OUT/$name.log"; grep -m5 -E "ERROR|SUMMARY" "$OUT/$name.log"
    else
        echo "ok   $name"
    fi
done
echo "fuzz: $total_fail target(s) failed"
[ $total_fail -eq 0 ]
