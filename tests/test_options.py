"""fairseq.options parser builders, and the base classes fairseq users subclass."""
from argparse import ArgumentParser

import pytest
import torch
import torch.nn as nn

from fairseq import options
from fairseq.models import (FairseqDecoder, FairseqEncoder, FairseqEncoderDecoderModel,
                            FairseqIncrementalDecoder)
from fairseq.models.fairseq_encoder import EncoderOut
from fairseq.tasks import TASK_REGISTRY, LegacyFairseqTask, setup_task


def test_training_parser_reads_fairseq_flags():
    parser = options.get_training_parser(input_args=["d"])
    args = options.parse_args_and_arch(parser, ["d", "--arch", "transformer_lm", "--optimizer", "adam",
                                                 "--lr", "0.001", "--max-tokens", "64", "--save-dir", "ck"])
    assert (args.data, args.task, args.arch, args.optimizer) == ("d", "language_modeling", "transformer_lm", "adam")
    assert args.lr == [0.001] and args.max_tokens == 64 and args.save_dir == "ck"
    assert args.decoder_layers == 6  # the architecture's fields arrive in the second pass


def test_generation_and_interactive_parsers():
    parser = options.get_generation_parser(input_args=["d"])
    args = options.parse_args_and_arch(parser, ["d", "--path", "m.pt", "--beam", "4", "--sampling",
                                                 "--sampling-topk", "10", "--remove-bpe", "@@ "])
    assert (args.path, args.beam, args.sampling, args.sampling_topk, args.post_process) == (
        "m.pt", 4, True, 10, "@@ ")
    assert args.task == "language_modeling"  # fairseq's default, translation, is not in scope
    assert args.nbest == 1 and args.gen_subset == "test" and args.distributed_world_size == 1
    assert not hasattr(args, "buffer_size")
    parser = options.get_interactive_parser(input_args=["d"])
    args = options.parse_args_and_arch(parser, ["d", "--input", "in.txt", "--buffer-size", "8"])
    assert (args.input, args.buffer_size, args.beam) == ("in.txt", 8, 5)
    assert options.get_interactive_generation_parser is options.get_interactive_parser


def test_validation_and_eval_lm_parsers():
    args = options.parse_args_and_arch(options.get_validation_parser(input_args=["d"]),
                                       ["d", "--path", "c.pt", "--valid-subset", "valid,test"])
    assert (args.path, args.valid_subset, args.task) == ("c.pt", "valid,test", "language_modeling")
    args = options.parse_args_and_arch(options.get_eval_lm_parser(input_args=["d"]),
                                       ["d", "--path", "c.pt", "--context-window", "16"])
    assert (args.path, args.context_window, args.gen_subset) == ("c.pt", 16, "test")


def test_preprocessing_parser_parses_like_fairseq_preprocess():
    from fairseq_cli.preprocess import get_preprocessing_parser as cli_parser

    argv = ["--only-source", "--trainpref", "t.txt", "--validpref", "v.txt", "--destdir", "out",
            "--workers", "2", "--nwordssrc", "100", "--log-format", "simple"]
    ours = vars(options.get_preprocessing_parser(input_args=argv).parse_args(argv))
    theirs = vars(cli_parser().parse_args(argv))
    assert {k: ours[k] for k in theirs} == theirs
    assert ours["task"] == "language_modeling" and "seed" in ours


def test_add_args_builders_on_a_plain_parser():
    parser = ArgumentParser()
    for add in (options.add_optimization_args, options.add_checkpoint_args, options.add_interactive_args):
        assert add(parser) is not None
    options.add_dataset_args(parser, train=True)
    options.add_distributed_training_args(parser, default_world_size=3)
    options.add_model_args(parser)
    options.add_common_eval_args(parser.add_argument_group("eval"))
    args = parser.parse_args(["--max-update", "5", "-a", "transformer_lm_gpt", "--path", "p"])
    assert (args.max_update, args.arch, args.path, args.distributed_world_size) == (5, "transformer_lm_gpt", "p", 3)
    assert args.input == "-" and args.batch_size is None
    assert options.eval_str_list("(1, 2)", int) == [1, 2] and options.csv_str_list("a,b") == ["a", "b"]


@pytest.fixture
def legacy_task():
    """A task in fairseq's older style, registered for one test only."""
    name = "legacy_api_test_task"

    class _Task(LegacyFairseqTask):
        @staticmethod
        def add_args(parser):
            parser.add_argument("data", help="a legacy task declares its own positional data")
            parser.add_argument("--legacy-level", type=int, default=1)

    TASK_REGISTRY.register(name)(_Task)
    yield name
    del TASK_REGISTRY.entries[name]


def test_legacy_task_flags_and_setup(legacy_task):
    parser = options.get_training_parser(input_args=["d"])
    args = options.parse_args_and_arch(parser, ["d", "--task", legacy_task, "--legacy-level", "4",
                                                 "--arch", "transformer_lm"])
    assert args.legacy_level == 4
    task = setup_task(args)
    assert isinstance(task, LegacyFairseqTask) and task.args is args and task.cfg is args
    assert not task.has_sharded_data("train")
    task.args.data = "a:b"
    assert task.has_sharded_data("train")


class _Encoder(FairseqEncoder):
    def __init__(self):
        super().__init__(dictionary=None)
        self.embed = nn.Embedding(10, 4)

    def forward(self, src_tokens, src_lengths=None, **kwargs):
        x = self.embed(src_tokens).transpose(0, 1)
        return EncoderOut(x, src_tokens.eq(0), None, None, src_tokens, src_lengths)

    def max_positions(self):
        return 32


class _Decoder(FairseqIncrementalDecoder):
    def __init__(self):
        super().__init__(dictionary=None)
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 10)

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        x, extra = self.extract_features(prev_output_tokens, encoder_out, incremental_state)
        return self.output_layer(x), extra

    def extract_features(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        x = self.embed(prev_output_tokens) + encoder_out.encoder_out.mean(0, keepdim=True).transpose(0, 1)
        steps = self.get_incremental_state(incremental_state, "steps") or {"n": torch.tensor(0)}
        self.set_incremental_state(incremental_state, "steps", {"n": steps["n"] + 1})
        return x, {"attn": None}

    def output_layer(self, features, **kwargs):
        return self.proj(features)


def test_encoder_decoder_model_and_incremental_state():
    model = FairseqEncoderDecoderModel(_Encoder(), _Decoder())
    src, prev = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([[2, 6], [2, 7]])
    logits, extra = model(src, torch.tensor([3, 2]), prev)
    assert logits.shape == (2, 2, 10) and "attn" in extra
    probs = model.get_normalized_probs((logits, extra), log_probs=False)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2)) and probs.dtype == torch.float32
    assert model.max_positions() == (32, 1e6) and model.max_decoder_positions() == 1e6
    features, _ = model.extract_features(src, torch.tensor([3, 2]), prev)
    assert torch.allclose(model.output_layer(features), logits)
    encoder_out = model.encoder.forward_torchscript({"src_tokens": src, "src_lengths": torch.tensor([3, 2]),
                                                    "prev_output_tokens": prev})
    assert encoder_out.encoder_out.shape == (3, 2, 4)

    state, other = {}, _Decoder()
    model.decoder(prev, encoder_out=encoder_out, incremental_state=state)
    model.decoder(prev, encoder_out=encoder_out, incremental_state=state)
    other.set_incremental_state(state, "steps", {"n": torch.tensor(99)})
    assert model.decoder.get_incremental_state(state, "steps")["n"].item() == 2  # own key per instance
    assert len(state) == 2
    model.decoder.reorder_incremental_state_scripting(state, torch.tensor([1, 0]))
    with pytest.raises(TypeError):
        FairseqEncoderDecoderModel(nn.Linear(1, 1), _Decoder())


def test_plain_decoder_forward_is_output_layer_of_features():
    class Dec(FairseqDecoder):
        def extract_features(self, prev_output_tokens, encoder_out=None, **kwargs):
            return prev_output_tokens.float().unsqueeze(-1).repeat(1, 1, 3), {}

        def output_layer(self, features, **kwargs):
            return features * 2

    dec = Dec(dictionary=None)
    out, _ = dec(torch.tensor([[1, 2]]))
    assert out.tolist() == [[[2.0] * 3, [4.0] * 3]]
    logp = dec.get_normalized_probs((out, {}), log_probs=True)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(1, 2))
    with pytest.raises(NotImplementedError):
        FairseqEncoder(None)(torch.zeros(1, 1, dtype=torch.long))
