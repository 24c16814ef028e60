#!/usr/bin/env bash
# The main job on the bundled demo corpus, from a fresh checkout, in one command:
# install, prepare text, preprocess, train through the Hydra door, evaluate, print perplexity.
#   bash scripts/demo.sh
# Everything lands under demo/ (text, data-bin, checkpoints); rerunning resumes from
# demo/checkpoints/checkpoint_last.pt and finishes at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/install.sh
OUT=${DEMO_DIR:-demo}
$PY scripts/prepare_demo_corpus.py --out "$OUT/text"
[ -f "$OUT/data-bin/dict.txt" ] || fairseq-preprocess --only-source \
    --trainpref "$OUT/text/train.txt" --validpref "$OUT/text/valid.txt" --testpref "$OUT/text/test.txt" \
    --destdir "$OUT/data-bin" --workers 2
fairseq-hydra-train \
    task.data="$OUT/data-bin" task.tokens_per_sample=128 task.sample_break_mode=none \
    model=transformer_lm model.decoder_layers=2 model.decoder_embed_dim=128 \
    model.decoder_input_dim=128 model.decoder_output_dim=128 model.decoder_ffn_embed_dim=512 \
    model.decoder_attention_heads=4 model.share_decoder_input_output_embed=true model.dropout=0.1 \
    optimizer=adam optimizer.adam_betas="'(0.9, 0.98)'" optimizer.weight_decay=0.01 \
    lr_scheduler=inverse_sqrt lr_scheduler.warmup_updates=100 lr_scheduler.warmup_init_lr=1e-07 \
    optimization.lr=[0.002] optimization.max_epoch=${DEMO_EPOCHS:-8} optimization.clip_norm=1.0 \
    dataset.max_tokens=2048 dataset.num_workers=0 \
    common.log_format=simple common.log_interval=20 \
    checkpoint.save_dir="$OUT/checkpoints" checkpoint.no_epoch_checkpoints=true \
    hydra.run.dir="$OUT/outputs"
echo "== perplexity of the trained model on the test split (an untrained one scores about the vocabulary size)"
fairseq-eval-lm "$OUT/data-bin" --path "$OUT/checkpoints/checkpoint_best.pt" --gen-subset test --max-tokens 4096
