"""``add_args(parser)`` for the component classes, from their config dataclass.

fairseq's scripts that build their own ``argparse`` parser call ``Model.add_args(parser)`` (or a
task's, a criterion's, ...). The classes here declare their parameters once, as the dataclass
registered with them (``cls.dataclass_config``); this mixin turns it into the flags.
"""


class DataclassFlags:
    """Gives a component class fairseq's ``add_args(parser)`` classmethod."""

    #: add the flags without defaults, so that a flag not given stays out of the namespace (a
    #: model's: its ``--arch`` fills them, as in fairseq)
    flags_without_defaults = False

    @classmethod
    def add_args(cls, parser) -> None:
        """Add this component's flags to ``parser`` (an ``ArgumentParser`` or a group): one per
        field of its config dataclass. A class without a dataclass adds nothing (a legacy one
        overrides this)."""
        from fairseq.dataclass.utils import gen_parser_from_dataclass

        config = getattr(cls, "dataclass_config", None)
        if config is not None:
            gen_parser_from_dataclass(parser, config(), delete_default=cls.flags_without_defaults)


__all__ = ["DataclassFlags"]
