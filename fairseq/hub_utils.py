"""The notebook door: load a trained language model and score or continue text with it.

    from fairseq.models.transformer_lm import TransformerLanguageModel
    lm = TransformerLanguageModel.from_pretrained("checkpoints", "checkpoint_best.pt",
                                                  data_name_or_path="data-bin")
    lm.score("The function returns a value.")["positional_scores"]
    lm.sample("The function", beam=1, sampling=True, sampling_topk=10, seed=1)

``from_pretrained`` reads local files only: a name that is not an existing directory or file is an
error, never a download. The hub object is an ``nn.Module``, so ``.to("cuda")``, ``.half()``,
``.bfloat16()`` and ``.eval()`` work as on any model.
"""
import copy
import dataclasses
import logging
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from fairseq.dataclass.configs import GenerationConfig
from fairseq.dataclass.values import field_default
from fairseq.errors import ConfigError

logger = logging.getLogger(__name__)

# files that may sit next to a checkpoint, and the bpe setting each one fills in
BPE_FILES = {
    "encoder.json": "gpt2_encoder_json",
    "vocab.bpe": "gpt2_vocab_bpe",
    "vocab.json": "bpe_vocab",
    "merges.txt": "bpe_merges",
    "sentencepiece.bpe.model": "sentencepiece_model",
    "spm.model": "sentencepiece_model",
}

# what a generation call may change, with the defaults GenerationConfig declares (and the seed)
GENERATION_OPTIONS = ("beam", "nbest", "max_len_a", "max_len_b", "min_len", "lenpen", "unkpen",
                      "temperature", "no_repeat_ngram_size", "sampling", "sampling_topk",
                      "sampling_topp", "unnormalized")
GENERATION_DEFAULTS: Dict[str, Any] = {
    **{f.name: field_default(f) for f in dataclasses.fields(GenerationConfig) if f.name in GENERATION_OPTIONS},
    "seed": None,
}


class HubError(ConfigError):
    """A bad argument to the hub interface (unknown path, unknown generation option, ...)."""


def from_pretrained(model_name_or_path: str, checkpoint_file: str = "model.pt",
                    data_name_or_path: str = ".", archive_map: Optional[Dict[str, str]] = None,
                    **kwargs: Any) -> Dict[str, Any]:
    """Load ``model_name_or_path/checkpoint_file`` (``a.pt:b.pt`` for an ensemble).

    Args:
        model_name_or_path: a local directory holding the checkpoint (or a name in
            ``archive_map`` that maps to one). Nothing is downloaded.
        checkpoint_file: the checkpoint's file name inside that directory.
        data_name_or_path: the data directory with ``dict.txt``, relative to the model directory
            unless absolute (``"."``: the model directory itself).
        **kwargs: config overrides (``bpe="gpt2"``, ``gpt2_encoder_json=...``,
            ``tokens_per_sample=...``); BPE files found in the model directory (``encoder.json``,
            ``vocab.bpe``, ``spm.model``, ...) are used when not given. ``user_dir=DIR``
            imports that plugin directory first (relative to the current directory); the
            ``user_dir`` the checkpoint records is never imported, so a model directory's own
            code never runs unless named here.

    Returns:
        ``{"args": cfg, "cfg": cfg, "task": task, "models": [model, ...]}``.
    """
    from fairseq import checkpoint_utils

    if archive_map is not None and model_name_or_path in archive_map:
        model_name_or_path = archive_map[model_name_or_path]
    if not os.path.exists(model_name_or_path):
        raise HubError(f"model_name_or_path={model_name_or_path!r}: no such directory or file; "
                       "this project loads local checkpoints only (nothing is downloaded)")
    model_dir = model_name_or_path
    if os.path.isfile(model_dir):  # a checkpoint file given directly
        model_dir, checkpoint_file = os.path.split(os.path.abspath(model_dir))
    paths = [os.path.join(model_dir, name) for name in checkpoint_file.split(os.pathsep)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        present = sorted(f for f in os.listdir(model_dir) if f.endswith(".pt"))
        raise HubError(f"checkpoint_file={checkpoint_file!r}: {missing[0]} does not exist"
                       + (f"; checkpoints there: {', '.join(present)}" if present else ""))
    if data_name_or_path.startswith("."):
        data_name_or_path = os.path.abspath(os.path.join(model_dir, data_name_or_path))
    overrides = dict(kwargs)
    overrides.setdefault("data", data_name_or_path)
    for file_name, key in BPE_FILES.items():
        candidate = os.path.join(model_dir, file_name)
        if os.path.isfile(candidate):
            overrides.setdefault(key, candidate)
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(paths, arg_overrides=overrides)
    return {"args": cfg, "cfg": cfg, "task": task, "models": models}


def _bpe_node(cfg: Any, overrides: Dict[str, Any], group: str) -> Any:
    """The ``bpe`` / ``tokenizer`` config to build: the checkpoint's, or the name given in
    ``overrides`` with the other overrides filling its fields."""
    from omegaconf import OmegaConf

    from fairseq.data.encoders import BPE_REGISTRY, TOKENIZER_REGISTRY

    registry = BPE_REGISTRY if group == "bpe" else TOKENIZER_REGISTRY
    # optional: no BPE / tokenizer may be chosen, and fairseq's hub passes a Namespace too
    node = cfg.get(group) if hasattr(cfg, "get") else getattr(cfg, group, None)
    name = overrides.get(group)
    if name is None and node is None:
        return None
    if name is not None:
        entry = registry.get(name)
        node = OmegaConf.structured(entry.dataclass()) if entry.dataclass is not None else OmegaConf.create({})
        node._name = name
    node = copy.deepcopy(node)
    if OmegaConf.is_config(node):
        OmegaConf.set_struct(node, False)
        for key, value in overrides.items():
            if key in node:
                node[key] = value
    return node


class GeneratorHubInterface(nn.Module):
    """A loaded language model (or ensemble) with its dictionary, BPE and tokenizer.

    Args:
        cfg: the checkpoint's resolved config (``cfg.generation`` supplies generation defaults
            when present).
        task: the task, which owns the dictionaries.
        models: the models; an ensemble averages their probabilities.
    """

    def __init__(self, cfg: Any, task: Any, models: Sequence[nn.Module], **overrides: Any):
        super().__init__()
        from fairseq.data.encoders import build_bpe, build_tokenizer

        self.cfg = cfg
        self.task = task
        self.models = nn.ModuleList(models)
        self.src_dict = task.source_dictionary
        self.tgt_dict = task.target_dictionary
        for model in self.models:
            model.eval()
        self.tokenizer = build_tokenizer(_bpe_node(cfg, overrides, "tokenizer"))
        self.bpe = build_bpe(_bpe_node(cfg, overrides, "bpe"))
        limits = [m.max_positions() for m in self.models if m.max_positions() is not None]
        self.max_positions = min(limits) if limits else None
        self.register_buffer("_float_tensor", torch.tensor([0.0]), persistent=False)
        self.add_bos_token = bool(_cfg_get(cfg, "task", "add_bos_token", False))

    @property
    def device(self) -> torch.device:
        return self._float_tensor.device

    # -- text <-> tokens -----------------------------------------------------------------------
    def tokenize(self, sentence: str) -> str:
        return self.tokenizer.encode(sentence) if self.tokenizer is not None else sentence

    def detokenize(self, sentence: str) -> str:
        return self.tokenizer.decode(sentence) if self.tokenizer is not None else sentence

    def apply_bpe(self, sentence: str) -> str:
        return self.bpe.encode(sentence) if self.bpe is not None else sentence

    def remove_bpe(self, sentence: str) -> str:
        return self.bpe.decode(sentence) if self.bpe is not None else sentence

    def binarize(self, sentence: str) -> Tensor:
        return self.src_dict.encode_line(sentence, add_if_not_exist=False).long()

    def string(self, tokens: Tensor) -> str:
        return self.tgt_dict.string(tokens)

    def encode(self, sentence: str) -> Tensor:
        """Text -> token ids (ending in EOS), through the tokenizer, the BPE and the dictionary."""
        return self.binarize(self.apply_bpe(self.tokenize(sentence)))

    def decode(self, tokens: Tensor) -> str:
        """Token ids -> text; the inverse of :meth:`encode` (EOS and padding are dropped)."""
        return self.detokenize(self.remove_bpe(self.string(tokens)))

    # -- scoring and generation -------------------------------------------------------------
    def score(self, sentences: Union[str, List[str]], replace_newline_with_eos: bool = False,
              include_eos: bool = False, **kwargs: Any) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Log-probability (natural log) of each token of each sentence, given BOS (``</s>``, or
        ``<s>`` with ``task.add_bos_token``) and the tokens before it.

        Args:
            sentences: a text or a list of texts, encoded as :meth:`encode` does.
            replace_newline_with_eos: a text's lines are scored as one sequence, each line
                followed by ``</s>`` (only the final one is left out, as always).
            include_eos: also score the ``</s>`` after the last token, as ``fairseq-eval-lm``
                counts every line of a data-bin with ``--sample-break-mode eos``: then
                ``exp(-score)`` of a line is eval-lm's perplexity of it (natural log; eval-lm
                reports base 2). Without it (fairseq 0.12's hub), n words give n positions.

        Returns:
            For each sentence ``{"tokens", "positional_scores", "score"}``: ``tokens`` are the
            scored ids (the sentence's without the final ``</s>``, or with it for
            ``include_eos``), ``positional_scores[i]`` is log p(tokens[i] | BOS, tokens[:i]) and
            ``score`` their mean.
        """
        if isinstance(sentences, str):
            return self.score([sentences], replace_newline_with_eos, include_eos, **kwargs)[0]
        if replace_newline_with_eos:
            encoded = [torch.cat([self.encode(line) for line in s.splitlines()]) for s in sentences]
        else:
            encoded = [self.encode(s) for s in sentences]
        hypos = self.generate(encoded, score_reference=True, include_eos=include_eos, **kwargs)
        return [h[0] for h in hypos]

    def sample(self, sentences: Union[str, List[str]], beam: int = 1, verbose: bool = False,
               **kwargs: Any) -> Union[str, List[str]]:
        """Continue each prompt; the text returned includes the prompt."""
        if isinstance(sentences, str):
            return self.sample([sentences], beam=beam, verbose=verbose, **kwargs)[0]
        hypos = self.generate([self.encode(s) for s in sentences], beam=beam, verbose=verbose, **kwargs)
        return [self.decode(h[0]["tokens"]) for h in hypos]

    translate = sample

    def _prompt_batches(self, tokenized: List[Tensor], batch_size: int) -> Iterator[List[int]]:
        order = sorted(range(len(tokenized)), key=lambda i: -len(tokenized[i]))
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]

    def generate(self, tokenized_sentences: Union[Tensor, List[Tensor]], beam: int = 5,
                 verbose: bool = False, skip_invalid_size_inputs: bool = False,
                 inference_step_args: Optional[Dict[str, Any]] = None,
                 prefix_allowed_tokens_fn: Any = None, score_reference: bool = False,
                 batch_size: int = 32, include_eos: bool = False, **kwargs: Any) -> Union[List[Dict[str, Any]], List[List[Dict[str, Any]]]]:
        """Continue (or, with ``score_reference``, score) token-id prompts.

        Args:
            tokenized_sentences: a 1-D tensor or a list of them, as :meth:`encode` returns.
            beam: hypotheses per prompt (with ``sampling=True``: samples per prompt).
            score_reference: score the prompts instead of continuing them (see :meth:`score`).
            include_eos: with ``score_reference``, also score the ``</s>`` after each prompt.
            **kwargs: generation options: ``sampling``, ``sampling_topk``, ``sampling_topp``,
                ``temperature``, ``max_len_a``, ``max_len_b``, ``min_len``, ``lenpen``,
                ``unkpen``, ``no_repeat_ngram_size``, ``nbest``, ``seed``.

        Returns:
            For each prompt, a best-first list of hypotheses ``{"tokens", "score",
            "positional_scores"}`` (for a single 1-D tensor: just that list).
        """
        from fairseq.sequence_generator import GenerationSettingError, build_generator

        if prefix_allowed_tokens_fn is not None:
            raise HubError("prefix_allowed_tokens_fn is not supported by this generator")
        if include_eos and not score_reference:
            raise HubError("include_eos=True applies to scoring only: give score_reference=True "
                           "(or call score(..., include_eos=True))")
        if torch.is_tensor(tokenized_sentences) and tokenized_sentences.dim() == 1:
            return self.generate([tokenized_sentences], beam=beam, verbose=verbose,
                                 skip_invalid_size_inputs=skip_invalid_size_inputs,
                                 score_reference=score_reference, batch_size=batch_size,
                                 include_eos=include_eos, **kwargs)[0]
        options = self.generation_options(beam=beam, **kwargs)
        bos = self.src_dict.bos() if self.add_bos_token else self.src_dict.eos()
        prompts = [t[:-1] if len(t) and int(t[-1]) == self.src_dict.eos() else t
                   for t in tokenized_sentences]
        limit = self.max_positions
        for i, prompt in enumerate(prompts):
            if limit is not None and len(prompt) + 1 > limit:
                raise HubError(f"sentence {i} has {len(prompt)} tokens, more than the model's "
                               f"{limit - 1} positions allow (the first holds BOS); shorten it")

        generator = None
        if options["seed"] is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(options["seed"]))
        try:
            worker = build_generator(list(self.models), options, self.tgt_dict, generator,
                                     score_reference=score_reference)
        except GenerationSettingError as e:
            raise HubError(str(e)) from None

        results: List[Optional[List[Dict[str, Any]]]] = [None] * len(prompts)
        pad = self.src_dict.pad()
        for indices in self._prompt_batches(prompts, batch_size):
            rows = [prompts[i] for i in indices]
            width = max(len(r) for r in rows) + 1
            src = torch.full((len(rows), width), pad, dtype=torch.long)
            tgt = torch.full((len(rows), width), pad, dtype=torch.long)
            for j, row in enumerate(rows):
                src[j, 0] = bos
                src[j, 1:len(row) + 1] = row
                tgt[j, :len(row)] = row
                if include_eos:
                    tgt[j, len(row)] = self.tgt_dict.eos()
            sample = {"net_input": {"src_tokens": src.to(self.device),
                                    "src_lengths": torch.tensor([len(r) + 1 for r in rows], device=self.device)},
                      "target": tgt.to(self.device)}
            with torch.no_grad():
                if score_reference:
                    hypos = worker.generate(list(self.models), sample)
                else:
                    prefix = src[:, 1:].to(self.device)
                    hypos = worker.generate(list(self.models), sample, prefix_tokens=prefix, bos_token=bos)
            for i, hyps in zip(indices, hypos):
                hyps = [{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in h.items()} for h in hyps]
                results[i] = hyps
        if verbose:
            for prompt, hyps in zip(prompts, results):
                logger.info("S\t%s", self.decode(prompt))
                for h in hyps:
                    logger.info("H\t%.4f\t%s", float(h["score"]), self.decode(h["tokens"]))
        return results  # type: ignore[return-value]

    def generation_options(self, **kwargs: Any) -> Dict[str, Any]:
        """The generation settings of a call: the checkpoint's ``generation`` group, then
        ``kwargs``; an unknown option is an error naming the closest one, a value out of its
        declared bounds (``temperature=nan``, ``nbest`` above ``beam``) one naming the bound."""
        import difflib

        options = dict(GENERATION_DEFAULTS)
        saved = _cfg_node(self.cfg, "generation")
        if saved is not None:
            for key in options:
                if key in saved and key != "beam":
                    options[key] = saved[key]
        for key, value in kwargs.items():
            if key not in options:
                hint = difflib.get_close_matches(key, list(options), n=1)
                raise HubError(f"unknown generation option {key!r}"
                               + (f"; did you mean {hint[0]!r}?" if hint else "")
                               + f" Options: {', '.join(sorted(options))}")
            options[key] = value
        # the bounds GenerationConfig declares (NaN, ranges, nbest <= beam), as at the doors
        from fairseq.dataclass.configs import GenerationConfig
        from fairseq.dataclass.value_checks import check_settings

        check_settings(GenerationConfig, options, "generation")
        return options


def _cfg_node(cfg: Any, name: str) -> Any:
    if cfg is None:
        return None
    if hasattr(cfg, "get"):
        try:
            return cfg.get(name)  # optional: the hub's cfg may be a Namespace or lack a node
        except Exception:
            return None
    return getattr(cfg, name, None)  # optional: as above


def _cfg_get(cfg: Any, group: str, key: str, default: Any) -> Any:
    node = _cfg_node(cfg, group)
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


__all__ = ["GeneratorHubInterface", "HubError", "from_pretrained"]
