"""The command line's keys, checked before Hydra makes a job folder.

Hydra refuses ``alframe loop.query_szie=5`` itself, in several lines, with the hint "use
+loop.query_szie=5", and that command then runs with the misspelled key stored beside
``query_size``. Here both spellings are refused in one line that names the closest valid key
(:mod:`alframe.config.keys`), with exit code 2, before any folder exists: the config is composed
once with each plain ``key=value`` override on a key that is not a config group turned into
``++key=value`` (add or set), and the result's keys are checked. A sweep over config groups is
composed once per combination of the swept groups (at most :data:`MAX_COMBINATIONS`); other swept
values only need their keys, so the first value stands for the rest. Anything this composition
cannot make sense of (a value of the wrong type, an unknown group option) is left to Hydra,
which reports it as before.
"""

from __future__ import annotations

import itertools

from alframe.config.keys import unknown_keys
from alframe.errors import ConfigError

#: sweeps over config groups: combinations composed at most
MAX_COMBINATIONS = 64


def _variants(o, loader) -> tuple[bool, list[str]]:
    """``(is a group choice, the override lines to compose for it)``."""
    from hydra.core.override_parser.types import OverrideType

    key = o.key_or_group
    group = "/" in key or ("." not in key and bool(loader.get_group_options(key)))
    # a plain key=value on a key that does not exist is added, then refused with a suggestion
    force = not group and not key.startswith("hydra.") and o.type is OverrideType.CHANGE
    if not o.is_sweep_override():
        return group, [("++" if force else "") + o.input_line]
    lines = [f"{'++' if force else ''}{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
    return group, lines if group else lines[:1]


def check_command_line(argv: list[str], config_dir: str, config_name: str = "config") -> None:
    """Refuse keys of the command line's overrides that nothing reads.

    Args:
        argv: the arguments after the program name (Hydra's flags and overrides).
        config_dir: the primary config folder (``conf/``).
        config_name: the primary config's name.

    Raises:
        ConfigError: one line per :func:`alframe.config.keys.check_keys`.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:
        return  # Hydra's own parser says what is wrong
    if (not args.overrides or args.help or args.hydra_help or args.info or args.shell_completion
            or args.config_dir or args.config_path):
        return  # nothing to check, or another config tree: the job checks its composed config
    config_name = args.config_name or config_name
    with initialize_config_dir(config_dir=config_dir, version_base="1.3", job_name="alframe"):
        loader = GlobalHydra.instance().config_loader()
        try:
            parsed = [_variants(o, loader) for o in OverridesParser.create().parse_overrides(args.overrides)]
        except Exception:
            return
        fixed = [lines[0] for group, lines in parsed if not group or len(lines) == 1]
        swept = [lines for group, lines in parsed if group and len(lines) > 1]
        for combo in itertools.islice(itertools.product(*swept), MAX_COMBINATIONS):
            try:
                cfg = compose(config_name, overrides=[*fixed, *combo])
            except Exception:
                return
            bad = unknown_keys(cfg)
            if bad:
                raise ConfigError("; ".join(bad))
