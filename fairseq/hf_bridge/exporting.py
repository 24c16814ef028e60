"""Writing an export directory from a model or a checkpoint."""
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
from torch import Tensor

from fairseq import hf_validation as checks
from fairseq.errors import CheckpointError, ConfigError

from fairseq.hf_bridge.common import META_KEY, META_VERSION, cfg_value
from fairseq.hf_bridge.export_weights import fairseq_to_hf, layer_ids
from fairseq.hf_bridge.refusals import hf_target
from fairseq.hf_bridge.tokenizer_export import build_tokenizer, write_tokenizer


# -- export: files ----------------------------------------------------------------------------
@dataclass
class ExportReport:
    """What :func:`export_model` wrote."""

    directory: str
    architecture: str
    vocab_size: int
    num_parameters: int
    tokenizer: str
    start_token_id: int
    notes: List[str]
    seconds: float



def plain_dict(node: Any) -> Dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        try:
            return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 -- an interpolation that cannot resolve alone
            return OmegaConf.to_container(node, resolve=False, enum_to_str=True)  # type: ignore[return-value]
    return dict(node)


def save_safetensors(tensors: Dict[str, Tensor], metadata: Dict[str, str], path: str) -> None:
    """``safetensors`` ``save_file`` made atomic (:func:`fairseq.file_io.atomic_write_path`)."""
    from safetensors.torch import save_file

    from fairseq.file_io import atomic_write_path

    atomic_write_path(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def export_model(model: Any, cfg: Any, dictionary: Any, out_dir: str, data_dir: Optional[str] = None,
                 overwrite: bool = False, checkpoint: Optional[str] = None) -> ExportReport:
    """Write ``model`` (a ``transformer_lm``) as a transformers model directory.

    Args:
        model: the loaded model (``cfg.model`` built with ``dictionary``).
        cfg: the run config (``model``, ``task``, ``bpe``).
        dictionary: the task's dictionary (the model's vocabulary, ids unchanged).
        out_dir: the directory to write (created; an existing non-empty one needs ``overwrite``).
        data_dir: the data directory whose dict.txt is copied as is.
        checkpoint: the checkpoint path, recorded in config.json.

    Raises:
        UnmappableModelError: the model maps to none of GPT-2, XGLM, Llama (one line naming why).
        ConfigError: ``out_dir`` exists and is not empty, without ``overwrite``.
    """
    from fairseq.file_io import atomic_write

    start = time.perf_counter()
    model_cfg = cfg.model
    hf_target(model_cfg)  # refuse before touching the directory
    out_dir = str(out_dir)
    if os.path.isfile(out_dir):
        raise ConfigError(f"--out {out_dir} is a file: give a directory to write the model into")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise ConfigError(f"--out {out_dir} exists and is not empty: remove it, choose another directory or "
                          "pass --overwrite")
    add_bos = bool(cfg_value(cfg_value(cfg, "task"), "add_bos_token", False))
    start_token = dictionary.bos() if add_bos else dictionary.eos()
    special_ids = {"bos": dictionary.bos(), "pad": dictionary.pad(), "eos": dictionary.eos(), "unk": dictionary.unk()}
    built = build_tokenizer(dictionary, cfg, start_token)
    state = model.state_dict()
    config, tensors, metadata = fairseq_to_hf(state, model_cfg, len(dictionary), dictionary.pad(), special_ids,
                                              start_token, unk_aliases=built.unk_aliases)
    scale = 1.0 if cfg_value(model_cfg, "no_scale_embedding", False) else math.sqrt(int(cfg_value(model_cfg, "decoder_embed_dim")))
    embed_w = state.get("decoder.embed_tokens.weight")
    out_w = state.get("decoder.output_projection.weight")
    tied = embed_w is not None and out_w is not None and out_w.data_ptr() == embed_w.data_ptr()
    plain_model = plain_dict(model_cfg)
    plain_model["decoder_layers"] = len(model.decoder.layers)
    plain_model["decoder_layers_to_keep"] = None
    task_node = cfg_value(cfg, "task")
    config[META_KEY] = {
        "version": META_VERSION, "embed_scale": scale, "tied": bool(tied), "start_token_id": start_token,
        "model": plain_model,
        "task": {"add_bos_token": add_bos, "tokens_per_sample": cfg_value(task_node, "tokens_per_sample")},
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None, "unk_aliases": built.unk_aliases,
    }
    notes: List[str] = []
    if config["model_type"] in ("gpt2", "llama") and scale != 1.0:
        name, table = ("GPT-2", "wte") if config["model_type"] == "gpt2" else ("Llama", "embed_tokens")
        notes.append(f"{name} has no embedding scale: {table} holds the table x {scale:g} and lm_head the table "
                     "(tie_word_embeddings=false); fairseq-import-hf ties them again")
    os.makedirs(out_dir, exist_ok=True)
    config_text = (json.dumps(config, indent=2, sort_keys=False) + "\n").encode("utf-8")
    save_safetensors(tensors, metadata, os.path.join(out_dir, "model.safetensors"))
    # optional: the config built above names the positions n_positions (gpt2) or max_position_embeddings (xglm)
    write_tokenizer(out_dir, built, dictionary, config.get("n_positions") or config.get("max_position_embeddings"),
                     data_dir)
    gen = {"bos_token_id": special_ids["bos"], "eos_token_id": special_ids["eos"],
           "pad_token_id": special_ids["pad"], "decoder_start_token_id": start_token}
    gen_text = (json.dumps(gen, indent=2) + "\n").encode("utf-8")
    atomic_write(os.path.join(out_dir, "generation_config.json"), lambda f: f.write(gen_text))
    atomic_write(os.path.join(out_dir, "config.json"), lambda f: f.write(config_text))  # last: marks it whole
    n_params = sum(int(t.numel()) for t in tensors.values())
    return ExportReport(out_dir, config["architectures"][0], len(dictionary), n_params, built.kind, start_token,
                        notes + built.notes, time.perf_counter() - start)


def check_fit(weights: Mapping[str, Any], model_node: Mapping[str, Any], dict_size: int, path: str,
               data_dir: str) -> None:
    """Say what is wrong when a checkpoint and its dictionary or config disagree, before the
    strict load (whose message would blame the config for a wrong dict.txt).

    Raises:
        ConfigError: the dictionary's size is not the embedding's rows (exit 2: another --data).
        CheckpointError: the config's layer count is not the weights' (a damaged checkpoint).
    """
    embed = weights.get("decoder.embed_tokens.weight")
    if isinstance(embed, Tensor) and embed.dim() == 2 and int(embed.shape[0]) != dict_size:
        raise ConfigError(f"{data_dir}/dict.txt has {dict_size} types but the model in {path} was trained with "
                          f"{int(embed.shape[0])}: give --data the directory with the dictionary it was trained "
                          "with")
    layers = model_node.get("decoder_layers") if isinstance(model_node, Mapping) else None
    found = len(layer_ids(weights))
    if isinstance(layers, int) and not isinstance(layers, bool) and layers != found and \
            not model_node.get("decoder_layers_to_keep"):
        raise CheckpointError(f"{path}: its config says decoder_layers={layers} but its weights hold {found} "
                              "layers: the checkpoint is damaged or was edited; use another checkpoint")


def export_checkpoint(path: str, out_dir: str, data: Optional[str] = None, overwrite: bool = False) -> ExportReport:
    """Load a checkpoint (this package's or fairseq 0.12's) and write it with :func:`export_model`.

    Args:
        path: the checkpoint file.
        out_dir: the directory to write.
        data: the data directory with the model's dict.txt (default: the checkpoint's task.data).
    """
    from fairseq import tasks
    from fairseq.checkpoint_utils import load_checkpoint_to_cpu
    from fairseq.checkpoint.loading import config_from_checkpoint

    start = time.perf_counter()
    path = str(path)
    if not os.path.exists(path):
        raise checks.MissingPathError(f"--path {path} does not exist: give the checkpoint file to export (e.g. "
                                      "checkpoints/checkpoint_best.pt)")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, ".metadata")):  # not a sharded one
        raise ConfigError(f"--path {path} is a directory: give the checkpoint file in it (e.g. "
                          f"{os.path.join(path, 'checkpoint_best.pt')})")
    if data is not None:
        if not os.path.isdir(str(data).split(":")[0]):
            raise checks.MissingPathError(f"--data {data} is not a directory: give the data directory with the "
                                          "dict.txt the model was trained with")
    state = load_checkpoint_to_cpu(path)
    # optional: the checkpoint's raw dict, read before it is typed: a damaged or hand-made file may lack these
    model_node = (state.get("cfg") or {}).get("model") or {}
    hf_target(model_node)  # refuse before building the model
    if data is None:
        # optional: as above, the raw dict
        saved_data = (state.get("cfg", {}).get("task") or {}).get("data")
        if not saved_data or not os.path.isfile(os.path.join(str(saved_data).split(":")[0], "dict.txt")):
            raise ConfigError(f"{path} records task.data={saved_data!r}, which holds no dict.txt: give --data, the "
                              "directory with the dictionary the model was trained with")
    cfg = config_from_checkpoint(state, path)
    if data:
        cfg.task.data = data
    task = tasks.setup_task(cfg.task)
    check_fit(state["model"], model_node, len(task.source_dictionary), path, str(cfg.task.data).split(":")[0])
    # the weights come from the checkpoint: the model is built without memory or random
    # initialization (seconds for a large model) and takes the checkpoint's tensors, as
    # load_model_ensemble_and_task would copy them (same keys, same upgrades of old layouts)
    try:
        with torch.device("meta"):
            model = task.build_model(cfg.model)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot build its model: {e}") from None
    try:
        model.load_state_dict(state["model"], strict=True, assign=True)
    except RuntimeError as e:
        lines = [line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()][1:3]
        raise CheckpointError(f"{path} does not fit the model built from its own config: {'; '.join(lines)} "
                              f"(is --data's dict.txt the one it was trained with? {len(task.source_dictionary)} "
                              "types there)") from None
    data_dir = str(cfg.task.data).split(":")[0]
    report = export_model(model.eval(), cfg, task.source_dictionary, out_dir, data_dir, overwrite, checkpoint=path)
    report.seconds = time.perf_counter() - start
    return report
