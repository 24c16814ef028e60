"""Weight layouts as data: each foreign layout is one table (:mod:`fairseq.formats.layout`),
applied both ways by one converter (:mod:`fairseq.formats.convert`).

* :data:`FAIRSEQ_LM` -- fairseq 0.12's ``transformer_lm`` (and older spellings);
* :data:`HF_GPT2` -- Hugging Face ``GPT2LMHeadModel``'s blocks;
* :data:`HF_XGLM` -- Hugging Face ``XGLMForCausalLM``'s blocks;
* :data:`HF_LLAMA` -- Hugging Face ``LlamaForCausalLM``'s blocks.

A new layout is one more module holding one more table. This package knows tensors and key
names only; the models, the checkpoint code and the Hugging Face bridge use it.
"""
from fairseq.formats.convert import LayoutError, from_ours, to_ours
from fairseq.formats.fairseq_lm import FAIRSEQ_LM
from fairseq.formats.hf_gpt2 import HF_GPT2
from fairseq.formats.hf_llama import HF_LLAMA
from fairseq.formats.hf_xglm import HF_XGLM
from fairseq.formats.layout import (DROP, IDENTITY, TRANSPOSE, Concat, Constant, Identity, Layout, Row,
                                    Transform, Transpose, same)

LAYOUTS = {layout.name: layout for layout in (FAIRSEQ_LM, HF_GPT2, HF_XGLM, HF_LLAMA)}

__all__ = ["Concat", "Constant", "DROP", "FAIRSEQ_LM", "HF_GPT2", "HF_LLAMA", "HF_XGLM", "IDENTITY", "Identity", "LAYOUTS",
           "Layout", "LayoutError", "Row", "TRANSPOSE", "Transform", "Transpose", "from_ours", "same",
           "to_ours"]
