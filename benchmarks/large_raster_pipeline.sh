#!/usr/bin/env bash
# The windowed predictor's CPU-side pipeline, before and after the separable blend and the read-ahead thread
# (benchmarks/README.md, "Large-raster prediction: the CPU side of the pipeline").  Each setting runs REPEATS
# times in a fresh process; "old" is the library at OLD_REV (a git worktree), run by this checkout's script.
#   bash benchmarks/large_raster_pipeline.sh [OUT] [REPEATS] [OLD_REV]
set -euo pipefail
out=${1:-benchmarks/results/large_raster_pipeline_cpu}
repeats=${2:-2}
old_rev=${3:-90016b9}
py=${PYTHON:-.venv/bin/python}
old=$(mktemp -d /tmp/eot-old-XXXX)
git worktree add -q --detach "$old" "$old_rev"
trap 'git worktree remove --force "$old"' EXIT
run() {  # name, then large_raster.py arguments
  local name=$1; shift
  for i in $(seq 1 "$repeats"); do
    if [[ $name == old* ]]; then
      PYTHONPATH="$old/src" OMP_NUM_THREADS=1 "$py" benchmarks/large_raster.py "$@" --out "$out/$name/$i" >/dev/null
    else
      OMP_NUM_THREADS=1 "$py" benchmarks/large_raster.py "$@" --out "$out/$name/$i" >/dev/null
    fi
    "$py" -c 'import json, sys; r = json.load(open(sys.argv[2]))["rows"][0]; print(sys.argv[1], "total", r["seconds"], "s, predict", r["predict_s"], "s, overviews+COG", r["overviews_and_cog_s"], "s, peak RSS", r["peak_rss_mib"], "MiB")' "$name/$i" "$out/$name/$i/results.json"
  done
}
for compress in none deflate; do
  for overlap in 0.5 0; do
    common=(--sizes 4000 --predictor band-means --threads 1 --overlap "$overlap" --compress "$compress")
    run "old_bandmeans_${compress}_ov${overlap}" "${common[@]}"
    run "new_bandmeans_${compress}_ov${overlap}_ra0" "${common[@]}" --read-ahead 0
    run "new_bandmeans_${compress}_ov${overlap}_ra2" "${common[@]}" --read-ahead 2
  done
done
common=(--sizes 2000 --predictor resnet10t --threads 2 --overlap 0 --compress deflate)
run old_resnet10t_deflate_ov0 "${common[@]}"
run new_resnet10t_deflate_ov0_ra0 "${common[@]}" --read-ahead 0
run new_resnet10t_deflate_ov0_ra2 "${common[@]}" --read-ahead 2
"$py" - "$out" "$old_rev" <<'PY'
import json, statistics, sys
from pathlib import Path

out, old_rev = Path(sys.argv[1]), sys.argv[2]
lines = [f"# The CPU side of windowed prediction: {old_rev} ('old') against this checkout ('new')", "",
         "Median (min-max) over the repeats, each in a fresh process; band means: no network, 1 thread; "
         "resnet10t: the network on 2 torch threads; 32 px windows, 512 px blocks.", "",
         "| setting | total s | predict s | overviews + COG s | peak RSS MiB | runs |", "|---|---|---|---|---|---|"]
for d in sorted(p for p in out.iterdir() if p.is_dir()):
    rows = [json.loads((r / "results.json").read_text())["rows"][0] for r in sorted(d.iterdir())]
    def cell(key: str) -> str:
        v = [float(r[key]) for r in rows]
        return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
    lines.append(f"| {d.name} | {cell('seconds')} | {cell('predict_s')} | {cell('overviews_and_cog_s')} | "
                 f"{max(r['peak_rss_mib'] for r in rows)} | {len(rows)} |")
(out / "results.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
