#!/bin/bash
# Fine-tune the shipped demo model on a lent GPU machine in ONE call and bring the result back (as run
# for stage 4 of assets/weights/xnet-demo.card.json, on an NVIDIA H200).
# The machine's image has torch/numpy/scipy but not nibabel or pydicom: carry their wheels in .whl/
#   (pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl nibabel==5.4.2 pydicom==3.0.2).
# Results come back through $OUT, at most 8 files of 16 MiB: best.pt and the average of every epoch's weights
# (xnet average over --keep-epochs' epoch-N.pt; last.pt when there are fewer than two) as fp16 checkpoints
# (30 MB) split in two parts each (join with `cat best16.pt.part0* > best16.pt`), their cards and the training
# log. Choose between them with `xnet evaluate --data VALDIR` on 20 validation cases (xnet synth --seed 900000),
# then: python scripts/make_demo_assets.py weights best16.pt --note "why this one"   (and the metrics step).
# env: DEV TRAIN VAL WORKERS START MIN SAFETY BATCH SPE PBN THREADS EXTRA (e.g. EXTRA=--resume on a warm machine)
#   BG=DIR: paste the lesions into the real lesion-free T1s of DIR too (--backgrounds, --template-share 0.2,
#   --negative-share 0.15, --variety: stage 7's shares); each is registered once on the machine (deepbet runs on the GPU).
# A 900 s device budget with calls of at most 600 s (machine start ~60-100 s counts too): call 1 with
#   MIN=7 SAFETY=500 (run timeout_s 560), then at once, while the machine is warm (it goes back after
#   30 s idle), call 2 with EXTRA=--resume and MIN set to the total training minutes wanted (e.g. 11):
#   the cases come from the machine's cache in seconds. Fetch best16/last16 after each call.
# START: training begins once this many training cases are ready (the rest join while the GPU trains;
#   preparing all 200 first cost 163 s of the 900 s device budget in stage 4). START=0 waits for all.
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/devout}; mkdir -p "$OUT"
DEV=${DEV:-cuda}; TRAIN=${TRAIN:-200}; VAL=${VAL:-20}; WORKERS=${WORKERS:-16}; MIN=${MIN:-6}
SAFETY=${SAFETY:-480}; BATCH=${BATCH:-16}; SPE=${SPE:-1000}; RUN=${RUN:-/tmp/run}
PY=${PY:-python3}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${THREADS:-1} OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | head -2; nproc
$PY -c "import torch,numpy,scipy,nibabel,pydicom; print(torch.__version__, torch.cuda.is_available(), numpy.__version__)" || exit 4
timeout -s INT "$SAFETY" $PY -m app.cli train --out "$RUN" --init assets/weights/xnet-demo.pt \
  --train-cases "$TRAIN" --val-cases "$VAL" --workers "$WORKERS" --start-after "${START:-16}" \
  --batch "$BATCH" --lesion-fraction 0.6 \
  ${BG:+--backgrounds "$BG" --template-share 0.2 --negative-share 0.15 --variety} \
  --precise-bn "${PBN:-50}" --steps-per-epoch "$SPE" --max-minutes "$MIN" --device "$DEV" --keep-epochs \
  ${EXTRA:-} > "$OUT/train.log" 2>&1
echo "train rc $? after $(( $(date +%s) - T0 )) s"
if [ "$(ls "$RUN"/epoch-*.pt 2>/dev/null | wc -l)" -ge 2 ]; then
  $PY -m app.cli average "$RUN"/epoch-*.pt --out "$RUN/swa.pt" --precise-bn "${PBN:-50}" --batch "$BATCH" \
    --device "$DEV" >> "$OUT/train.log" 2>&1
  echo "average rc $? after $(( $(date +%s) - T0 )) s"
fi
grep -E "cases ready|in the pool|epoch [0-9]+:|stopped|early|rror|Traceback" "$OUT/train.log" | tail -40
grep "steps/s" "$OUT/train.log" | tail -2
OUT="$OUT" RUN="$RUN" $PY - <<'EOF'
import os
from pathlib import Path
from xnet_core.checkpoint import load_checkpoint, save_checkpoint
out, run = Path(os.environ["OUT"]), Path(os.environ["RUN"])
for name in ("best", "swa" if (run / "swa.pt").is_file() else "last"):
    src = run / f"{name}.pt"
    if not src.is_file():
        print("missing", src)
        continue
    ck = load_checkpoint(src)
    saved = save_checkpoint(ck.build_model(), out / f"{name}16.pt", ck.card, half=True)
    print(name, saved.sha256, ck.card.get("steps"), ck.card.get("epochs"))
EOF
for f in "$OUT"/best16.pt "$OUT"/swa16.pt "$OUT"/last16.pt; do [ -f "$f" ] && split -n 2 -d "$f" "$f.part" && rm "$f"; done
ls -la "$OUT"; echo "total $(( $(date +%s) - T0 )) s"
