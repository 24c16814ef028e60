"""Hugging Face ``transformers`` <-> ``transformer_lm``: the weight and vocabulary mapping, both ways.

Export (``fairseq-export-hf``) writes a directory that ``AutoModelForCausalLM.from_pretrained``
loads with no custom code; import (``fairseq-import-hf``) turns such a directory back into a
checkpoint of this package. ``docs/huggingface.md`` is the user's guide; in short:

* a pre-norm ``transformer_lm`` with sinusoidal positions is an ``XGLMForCausalLM``: XGLM is
  fairseq's own decoder (pre-norm, sinusoids offset by ``padding_idx + 1 = 2``, embeddings
  scaled by ``sqrt(d)`` unless ``scale_embedding`` is off, a final LayerNorm);
* a pre-norm ``transformer_lm`` with learned positions is a ``GPT2LMHeadModel``: the learned
  table loses its first ``padding_idx + 1`` rows (fairseq's positions start there, GPT-2's at 0).
  GPT-2 has no embedding scale, so a model that scales (the default, and every preset) is
  written with an untied ``lm_head`` (the original table) and ``wte`` = table x scale, which is
  the same product fairseq computes; import recognizes the pair and ties them again;
* anything else (post-norm, adaptive input or softmax, an embedding LayerNorm, NormFormer
  scales, no final LayerNorm, no positions, input/output projections) is refused by
  :class:`UnmappableModelError`, one line naming the option.

Vocabulary: the exported model's ids *are* the fairseq dictionary's ids (``<s>=0``, ``<pad>=1``,
``</s>=2``, ``<unk>=3``, then ``dict.txt``), written as ``bos/pad/eos`` ids of the config and
the tokenizer's ``unk``. A fairseq LM starts every sample with ``</s>`` (``<s>`` with
``task.add_bos_token``), so the exported tokenizer prepends that token: ``tokenizer(text)``
gives the ids ``fairseq`` feeds its model, and the logits agree.

Import of a directory that was not exported from here maps the HF special tokens onto fairseq's
(HF ``eos`` -> ``</s>``, and ``bos``, ``pad``, ``unk`` when the HF vocabulary has distinct ones);
the other HF tokens keep their order after fairseq's four. A fairseq special that the HF
vocabulary lacks (GPT-2 has only ``<|endoftext|>``, so ``<s>``, ``<pad>`` and ``<unk>``) gets
an output row whose logit is a constant far below every real one (see :func:`silent_rows`), so
the probabilities of the HF tokens are HF's.

Where each job lives: :mod:`~fairseq.hf_bridge.refusals` (what maps), :mod:`~.export_weights`
and :mod:`~.import_weights` (the config and weights, the blocks through the tables of
:mod:`fairseq.formats`), :mod:`~.vocab` (ids), :mod:`~.reading` (an HF directory),
:mod:`~.importing` (our checkpoint, or a hub object), :mod:`~.tokenizer_export` and
:mod:`~.exporting` (an export directory); :mod:`~.common` holds what they share.

Layering: this package sits above the checkpoint code and the hub (``setup.cfg``); only
``fairseq_cli`` imports it. ``transformers`` is never imported here: the files are read and
written as JSON and safetensors (``safetensors`` and, for tokenizers, ``tokenizers``).
"""
from fairseq.hf_bridge.common import SUPPORTED_MODEL_TYPES, UnmappableModelError
from fairseq.hf_bridge.export_weights import fairseq_to_hf
from fairseq.hf_bridge.exporting import ExportReport, export_checkpoint, export_model
from fairseq.hf_bridge.import_weights import hf_to_fairseq
from fairseq.hf_bridge.importing import ImportReport, from_pretrained_hf, import_directory
from fairseq.hf_bridge.reading import LoadedHF, is_hf_model_dir, load_hf_directory
from fairseq.hf_bridge.refusals import hf_target
from fairseq.hf_bridge.vocab import VocabMap, build_vocab_map, silent_rows

__all__ = [
    "ExportReport", "ImportReport", "LoadedHF", "SUPPORTED_MODEL_TYPES", "UnmappableModelError", "VocabMap",
    "build_vocab_map", "export_checkpoint", "export_model", "fairseq_to_hf", "from_pretrained_hf", "hf_target",
    "hf_to_fairseq", "import_directory", "is_hf_model_dir", "load_hf_directory", "silent_rows",
]
