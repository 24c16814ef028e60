#!/usr/bin/env bash
# The main job on the bundled demo corpus, from a fresh checkout, in one command:
# install, prepare text, preprocess, train through the Hydra door, evaluate, print perplexity.
#   bash scripts/demo.sh
#   bash scripts/demo.sh --bpe   # the same job on byte-level BPE subwords, under demo-bpe/
# Everything lands under demo/ (text, data-bin, checkpoints); rerunning resumes from
# demo/checkpoints/checkpoint_last.pt and finishes at once.
# With --bpe, a byte-level BPE learnt from the training text (scripts/train_bpe.py) encodes
# every split (scripts/encode_bpe.py), the model records it (bpe=gpt2 ...), and the demo ends
# with a sample continuation from fairseq-interactive, decoded back to plain text.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
USE_BPE=0
for arg in "$@"; do
    case "$arg" in
        --bpe) USE_BPE=1 ;;
        *) echo "usage: bash scripts/demo.sh [--bpe]" >&2; exit 2 ;;
    esac
done
bash scripts/install.sh
if [ "$USE_BPE" = 1 ]; then OUT=${DEMO_DIR:-demo-bpe}; else OUT=${DEMO_DIR:-demo}; fi
$PY scripts/prepare_demo_corpus.py --out "$OUT/text"
TEXT="$OUT/text" EXT=txt
BPE_ARGS=()
if [ "$USE_BPE" = 1 ]; then
    [ -f "$OUT/bpe/encoder.json" ] || $PY scripts/train_bpe.py --type byte_bpe \
        --vocab-size "${DEMO_BPE_VOCAB:-4000}" --output-dir "$OUT/bpe" "$OUT/text/train.txt"
    mkdir -p "$OUT/bpe-text"
    [ -f "$OUT/bpe-text/test.bpe" ] || $PY scripts/encode_bpe.py --bpe gpt2 \
        --gpt2-encoder-json "$OUT/bpe/encoder.json" --gpt2-vocab-bpe "$OUT/bpe/vocab.bpe" \
        --inputs "$OUT/text/train.txt" "$OUT/text/valid.txt" "$OUT/text/test.txt" \
        --outputs "$OUT/bpe-text/train.bpe" "$OUT/bpe-text/valid.bpe" "$OUT/bpe-text/test.bpe" \
        --workers 2
    TEXT="$OUT/bpe-text" EXT=bpe
    BPE_ARGS=(bpe=gpt2 bpe.gpt2_encoder_json="$OUT/bpe/encoder.json" bpe.gpt2_vocab_bpe="$OUT/bpe/vocab.bpe")
fi
[ -f "$OUT/data-bin/dict.txt" ] || fairseq-preprocess --only-source \
    --trainpref "$TEXT/train.$EXT" --validpref "$TEXT/valid.$EXT" --testpref "$TEXT/test.$EXT" \
    --destdir "$OUT/data-bin" --workers 2
fairseq-hydra-train ${BPE_ARGS[@]+"${BPE_ARGS[@]}"} \
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
if [ "$USE_BPE" = 1 ]; then
    # the checkpoint records its BPE: the prompt is encoded and the output decoded with it
    PROMPT=${DEMO_PROMPT:-"The function returns"}
    echo "== a sample continuation of \"$PROMPT\" (plain text, decoded with the model's BPE)"
    echo "$PROMPT" | fairseq-interactive "$OUT/data-bin" --path "$OUT/checkpoints/checkpoint_best.pt" \
        --beam 1 --sampling --sampling-topk 10 --seed 1 --max-len-b 40 2>/dev/null | grep '^D-' | cut -f3
fi
