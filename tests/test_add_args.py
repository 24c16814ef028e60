"""``Component.add_args(parser)``: fairseq's way for a script that builds its own parser to get a
component's flags, one per field of the component's config dataclass."""
import argparse

import pytest

from fairseq.models.transformer_lm import TransformerLanguageModel
from fairseq.optim.adam import FairseqAdam
from fairseq.optim.lr_scheduler.inverse_square_root_schedule import InverseSquareRootSchedule
from fairseq.tasks.language_modeling import LanguageModelingTask


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    cls.add_args(parser)
    return parser.parse_args(argv)


def test_a_models_flags_come_without_defaults_so_an_architecture_can_fill_them():
    args = parse(TransformerLanguageModel, ["--decoder-layers", "3", "--decoder-learned-pos"])
    assert args.decoder_layers == 3 and args.decoder_learned_pos is True
    # left out of the namespace for the --arch defaults to fill (fairseq's model group suppresses
    # absent flags the same way)
    assert not hasattr(args, "decoder_embed_dim")


@pytest.mark.parametrize("cls, argv, key, given, default", [
    (LanguageModelingTask, ["--tokens-per-sample", "64"], "tokens_per_sample", 64, 1024),
    (FairseqAdam, ["--adam-eps", "1e-6"], "adam_eps", 1e-6, 1e-8),
    (InverseSquareRootSchedule, ["--warmup-updates", "7"], "warmup_updates", 7, 4000),
])
def test_the_other_components_flags_keep_their_defaults(cls, argv, key, given, default):
    assert getattr(parse(cls, argv), key) == given
    assert getattr(parse(cls, []), key) == default


def test_a_field_shared_by_interpolation_is_not_the_components_flag():
    # cross_entropy's sentence_avg is ${optimization.sentence_avg}: --sentence-avg is optimization's
    from fairseq.criterions.cross_entropy import CrossEntropyCriterion

    parser = argparse.ArgumentParser()
    CrossEntropyCriterion.add_args(parser)
    assert not any("--sentence-avg" in a.option_strings for a in parser._actions)


def test_a_class_without_a_config_dataclass_adds_nothing():
    class Plain(LanguageModelingTask):
        dataclass_config = None

    parser = argparse.ArgumentParser()
    before = len(parser._actions)
    Plain.add_args(parser)
    assert len(parser._actions) == before
