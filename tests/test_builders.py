"""Models and criterions build equally from a dataclass, a DictConfig and a legacy Namespace."""
from argparse import Namespace

import torch
from omegaconf import OmegaConf

SIZES = dict(decoder_layers=2, decoder_embed_dim=16, decoder_input_dim=16, decoder_output_dim=16,
             decoder_ffn_embed_dim=32, decoder_attention_heads=2, max_target_positions=24,
             share_decoder_input_output_embed=True, activation_fn="gelu")


def _task(data_bin):
    from fairseq import tasks
    from fairseq.tasks.language_modeling import LanguageModelingConfig

    return tasks.setup_task(LanguageModelingConfig(data=data_bin, tokens_per_sample=24, seed=1,
                                                   dataset_impl=None))


def _same_modules(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_model_from_dataclass_dictconfig_and_namespace(data_bin):
    from fairseq.models import build_model
    from fairseq.models.transformer_lm import TransformerLanguageModelConfig

    task = _task(data_bin)
    instance = TransformerLanguageModelConfig(_name="transformer_lm", **SIZES)
    builds = []
    for cfg in (instance, OmegaConf.structured(instance), Namespace(arch="transformer_lm", **SIZES)):
        torch.manual_seed(3)
        builds.append(build_model(cfg, task))
    for other in builds[1:]:
        _same_modules(builds[0], other)
    assert builds[0].decoder.layers[0].self_attn is not None


def test_model_namespace_takes_preset_defaults(data_bin):
    from fairseq.models import build_model

    task = _task(data_bin)
    args = Namespace(arch="transformer_lm_gpt", **{**SIZES, "activation_fn": "relu"})
    model = build_model(args, task)
    assert len(model.decoder.layers) == 2  # explicit
    # attention_dropout comes from the preset (0.1) since the namespace does not carry it
    from fairseq.models import MODEL_REGISTRY

    cfg = MODEL_REGISTRY.to_config(args)
    assert cfg.attention_dropout == 0.1 and cfg.activation_fn == "relu"


def test_criterion_from_dataclass_dictconfig_and_namespace(data_bin):
    from fairseq.criterions import build_criterion
    from fairseq.criterions.cross_entropy import CrossEntropyCriterionConfig

    task = _task(data_bin)
    instance = CrossEntropyCriterionConfig(_name="cross_entropy", sentence_avg=True)
    built = [build_criterion(cfg, task) for cfg in
             (instance, OmegaConf.structured(instance), Namespace(criterion="cross_entropy", sentence_avg=True))]
    assert [(type(c).__name__, c.sentence_avg, c.padding_idx) for c in built] == \
        [("CrossEntropyCriterion", True, task.target_dictionary.pad())] * 3
