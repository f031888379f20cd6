#!/bin/sh
# Builds the pipeline loader's libFuzzer target (clang, ASan + UBSan) into build-fuzz/
# and runs it on the seed corpus. Run from the repository root:
#
#     tools/fuzz/build_and_run.sh [SECONDS] [extra libFuzzer flags...]
#
# New interesting inputs go to build-fuzz/corpus/ (the seeds in tests/fuzz_corpus/ are
# only read); crashes, leaks, timeouts and OOMs are written to build-fuzz/artifacts/.
set -eu

seconds=${1:-60}
[ $# -gt 0 ] && shift

out=build-fuzz
mkdir -p "$out/corpus" "$out/artifacts"

clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -DBOOST_DLL_USE_STD_FS -Icore/include -Icore/src \
    tools/fuzz/fuzz_pipeline.cpp core/src/pipeline.cpp core/src/config_schema.cpp core/src/escape.cpp \
    core/src/interpolate.cpp core/src/pipeline_file.cpp core/src/yaml_json.cpp core/src/yaml_prescan.cpp \
    -lyaml-cpp -o "$out/fuzz_pipeline"

exec "$out/fuzz_pipeline" "$out/corpus" tests/fuzz_corpus/pipeline \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$out/artifacts/" -print_final_stats=1 "$@"
