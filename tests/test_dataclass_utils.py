"""gen_parser_from_dataclass: positional data, nested dataclasses, prefixes, aliases."""
from argparse import ArgumentParser
from dataclasses import dataclass, field
from typing import List, Optional

import pytest

from fairseq.dataclass import FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass


@dataclass
class Inner(FairseqDataclass):
    data: str = field(default="inner-data", metadata={"help": "a path"})
    depth: int = field(default=3, metadata={"help": "how deep"})


@dataclass
class Middle(FairseqDataclass):
    inner: Inner = field(default_factory=Inner)
    width: int = field(default=0, metadata={"help": "how wide"})


@dataclass
class Outer(FairseqDataclass):
    data: str = field(default="root", metadata={"help": "the root data"})
    enc: Middle = field(default_factory=Middle)
    dec: Inner = field(default_factory=lambda: Inner(depth=9))
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    sizes: List[int] = field(default_factory=lambda: [1, 2], metadata={"help": "sizes"})
    name: Optional[str] = field(default=None, metadata={"help": "a name", "argparse_alias": "-n"})


def test_data_is_positional_and_fields_are_flags():
    parser = ArgumentParser()
    gen_parser_from_dataclass(parser, Inner(), True)
    args = parser.parse_args(["--depth", "10", "some/path"])
    assert args.depth == 10 and args.data == "some/path"


def test_nested_fields_are_flattened_without_prefix():
    parser = ArgumentParser()
    gen_parser_from_dataclass(parser, Middle(), True)
    args = parser.parse_args(["--depth", "4", "--width", "5", "p"])
    assert (args.depth, args.width, args.data) == (4, 5, "p")


def test_with_prefix_names_nested_flags_by_their_path():
    parser = ArgumentParser()
    gen_parser_from_dataclass(parser, Outer(), False, "")
    args = parser.parse_args(["--enc-inner-data", "E", "--enc-inner-depth", "7", "--enc-width", "2",
                              "--dec-data", "D", "--lr", "0.5", "--sizes", "3,4", "-n", "x", "the/data"])
    assert args.enc_inner_data == "E" and args.enc_inner_depth == 7 and args.enc_width == 2
    assert args.dec_data == "D" and args.lr == 0.5 and args.sizes == [3, 4] and args.name == "x"
    assert args.data == "the/data"
    defaults = parser.parse_args([])
    assert defaults.dec_depth == 9  # the nested instance's own values are the defaults
    assert defaults.enc_inner_depth == 3 and defaults.data == "root"
    help_text = parser.format_help()
    assert "enc-inner: how deep" in help_text


def test_delete_default_leaves_absent_flags_out():
    parser = ArgumentParser()
    gen_parser_from_dataclass(parser, Inner(), delete_default=True)
    args = parser.parse_args([])
    assert not hasattr(args, "depth") and args.data is None


def test_a_flag_already_on_the_parser_is_kept():
    parser = ArgumentParser()
    parser.add_argument("--depth", type=str, default="mine")
    gen_parser_from_dataclass(parser, Inner())
    assert parser.parse_args([]).depth == "mine"
    with pytest.raises(SystemExit):
        parser.parse_args(["--width", "1"])
