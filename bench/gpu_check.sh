#!/usr/bin/env bash
# One-shot GPU check, under 8 minutes on one GPU:
#   1. the CUDA-marked tests (tests/test_gpu.py: every stage and every attack family (one row
#      each) on the device, float32 GPU vs CPU,
#      a bf16 stage sharded by FSDP on a one-rank NCCL group, a defender trial end to end);
#   2. bench/gpu_throughput.py for a 0.5B and a 1B Llama-style model in bf16 (plain loop,
#      stage loop, stage loop with FSDP);
#   3. bench/attack_population.py: P LoRA attacks over one shared 1B base vs. one by one;
#   4. one summary table (tests; tokens/s, MFU, stage loop / plain loop; population speed-ups).
#
#   bash bench/gpu_check.sh [OUTPUT_DIR]      # PYTHON=... to pick the interpreter
#
# Without a GPU it says so and measures nothing (exit 0). Exit 1 if a test failed or a step broke.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
out=${1:-$(mktemp -d)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA GPU on this machine: nothing measured"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '· transformers', transformers.__version__)"

status=0
echo "== 1. CUDA-marked tests"
timeout 200 "$PY" -m pytest -m gpu tests/test_gpu.py -q -rA -s -p no:cacheprovider \
  --junitxml="$out/gpu_tests.xml" 2>&1 | tee "$out/gpu_tests.log" | grep -v "Loading weights\|Writing model" || status=1
[ -s "$out/gpu_tests.xml" ] || status=1

echo "== 2. throughput"
for size in 0.5b 1b; do
  timeout 120 "$PY" bench/gpu_throughput.py --size "$size" --steps 25 --warmup 5 \
    --json "$out/throughput_$size.json" 2>&1 | tee "$out/throughput_$size.log" || status=1
done

echo "== 3. LoRA attack populations"
timeout 150 "$PY" bench/attack_population.py --kind lora --model 1b --P 4 8 16 --batch 8 --seq 256 \
  --steps 10 --json "$out/population_1b.json" 2>&1 | tee "$out/population_1b.log" || status=1

echo "== summary"
"$PY" - "$out" <<'EOF' || status=1
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
print("| check | result | tokens/s | MFU | stage loop / plain loop |\n|---|---|---|---|---|")
xml = out / "gpu_tests.xml"
if xml.exists():
    for case in ET.parse(xml).iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        result = "FAILED" if bad else "skipped" if case.find("skipped") is not None else "passed"
        print(f"| test {case.get('name')} | {result} ({float(case.get('time', 0)):.1f} s) | | | |")
else:
    print("| CUDA-marked tests | did not run | | | |")
for size in ("0.5b", "1b"):
    f = out / f"throughput_{size}.json"
    if not f.exists():
        print(f"| throughput {size} | did not finish | | | |")
        continue
    for r in json.loads(f.read_text()):
        mfu = f"{r['mfu']:.1%}" if r["mfu"] else "–"
        print(f"| {r['params'] / 1e9:.2f} B {r['dtype']} {r['step']}: {r['path']} | {r['device']} | "
              f"{r['tokens_s']:,.0f} | {mfu} | {r['ratio']:.3f} |")
f = out / "population_1b.json"
if not f.exists():
    print("| LoRA populations 1b | did not finish | | | |")
else:
    got = json.loads(f.read_text())
    for r in got["rows"]:
        print(f"| LoRA population P = {r['P']}, batch {r['batch']} × {r['seq']} | {r['device']} | "
              f"{r['population_ms']:.1f} vs {r['one_by_one_ms']:.1f} ms / attack-step | | {r['speedup']:.2f}× |")
    print(f"| LoRA population = one by one | rel. loss diff {got['lora_check_rel_diff']:.1e} | | | |")
EOF
exit $status
