#!/usr/bin/env bash
# Large-raster prediction with the network on a GPU (issue 7), as run on the lent H200 through the
# device tool: rasterio travels as wheels in .whl/ (Python 3.12; see /work/.library/device/README.md),
# eotransfer from src/.  Results go to $OUT/gpu (results.json, results.md), written after each size.
#   [READ_AHEAD=2] bash benchmarks/large_raster_gpu.sh [SIZES] [SECONDS]   (READ_AHEAD=0: the comparison without)
set -u
sizes=${1:-2500,5000,10000}
limit=${2:-420}
out=${OUT:-benchmarks/results}/gpu
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import rasterio, torch, eotransfer.predict.raster; print('rasterio', rasterio.__version__, 'gdal', rasterio.__gdal_version__, 'torch', torch.__version__, torch.cuda.is_available())" || exit 1
timeout 90 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_card.py -k "device or cuda" > "${OUT:-/tmp}/pytest.log" 2>&1
grep -E "Error:|passed|failed|error" "${OUT:-/tmp}/pytest.log" | tail -8
timeout "$limit" python3 benchmarks/large_raster.py --sizes "$sizes" --accelerator cuda --batch-size 2048 \
    --threads 16 --network-windows 200000 --read-ahead "${READ_AHEAD:-2}" --workdir /tmp/eot-large-raster --out "$out"
echo "large_raster exit $?"
