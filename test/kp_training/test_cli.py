"""Flags generated from config dataclasses (kp_training.cli)."""

import argparse
import dataclasses

import pytest

from kp_training.cli import add_config_flags, given, setting
from kp_training.evaluate import EvalConfig
from kp_training.evaluate import build_parser as eval_parser
from kp_training.train import TrainConfig
from kp_training.train import build_parser as train_parser


@dataclasses.dataclass
class Example:
    count: int = setting(3, "how many", aliases=("-n",))
    ratio: float | None = setting(None, "a ratio")
    mode: str = setting("a", "which mode", choices=("a", "b"))
    verbose: bool = setting(False, "talk more")
    hidden: list = setting(help="not a flag", cli=False, default_factory=list)
    extra: list[str] = setting(help="given once per item", default_factory=list)


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, Example)
    return parser.parse_args(argv)


def test_types_choices_aliases_and_booleans():
    args = parse(["-n", "5", "--ratio", "0.5", "--mode", "b", "--verbose"])
    assert given(args, Example) == {"count": 5, "ratio": 0.5, "mode": "b", "verbose": True}
    assert given(parse(["--no-verbose"]), Example) == {"verbose": False}
    assert Example(**given(args, Example)).count == 5
    for bad in (["--count", "x"], ["--mode", "c"], ["--hidden", "1"]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_a_list_field_is_a_flag_given_once_per_item():
    assert given(parse(["--extra", "a", "--count", "1", "--extra", "b c"]), Example) == {"extra": ["a", "b c"], "count": 1}
    assert Example().extra == [] and "extra" not in given(parse([]), Example)


def test_flags_left_out_are_not_given_so_config_files_keep_their_values():
    assert given(parse([]), Example) == {}


def test_unsupported_annotations_are_refused():
    @dataclasses.dataclass
    class Bad:
        pairs: tuple = (1, 2)

    @dataclasses.dataclass
    class BadList:
        nested: list[list] = dataclasses.field(default_factory=list)

    for cls in (Bad, BadList):
        with pytest.raises(TypeError, match="no flag"):
            add_config_flags(argparse.ArgumentParser(), cls)


@pytest.mark.parametrize("config_cls, parser", [(TrainConfig, train_parser), (EvalConfig, eval_parser)])
def test_every_config_field_is_a_flag_with_help(config_cls, parser):
    actions = {a.dest: a for a in parser()._actions}
    for f in dataclasses.fields(config_cls):
        if f.metadata.get("cli", True):
            assert f.name in actions and actions[f.name].help, f.name
            assert "--" + f.name.replace("_", "-") in actions[f.name].option_strings
