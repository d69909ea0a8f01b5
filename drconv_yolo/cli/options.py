"""What every subcommand's parser shares: the help formatter and the one ``key=value`` reader.

Options are spelled one way, with hyphens (``--max-det``); ``max_det=300``, ``max-det=300``, ``--max_det 300`` and
``--max-det=300`` all mean the same. ``key=value`` tokens whose key is not an option of the parser are returned
apart (``compare`` and ``demo`` pass them on to Ultralytics as train arguments; the other subcommands refuse them).
"""

from __future__ import annotations

import argparse
from typing import List, Sequence, Tuple


class HelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to option help unless the help mentions a default or X is None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _flag(key: str) -> str:
    return "--" + key.strip().lstrip("-").replace("_", "-")


def split_key_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Rewrite ``key=value`` and ``--key_name`` tokens into the parser's ``--key-name`` options.

    Args:
        parser: The subcommand's parser (its option strings decide what is an option).
        argv: The subcommand's arguments.

    Returns:
        ``(options, extra)``: the argv for ``parser.parse_args`` and the ``key=value`` tokens that name no option
        of the parser, in their order.
    """
    known = {s for action in parser._actions for s in action.option_strings}
    options: List[str] = []
    extra: List[str] = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            key, eq, value = token[2:].partition("=")
            flag = _flag(key)
            options.append(flag + eq + value if flag in known else token)
        elif not token.startswith("-") and "=" in token:
            key, _, value = token.partition("=")
            flag = _flag(key)
            if flag in known:
                options += [flag, value]
            else:
                extra.append(token)
        else:
            options.append(token)
    return options, extra


def parse(parser: argparse.ArgumentParser, argv: Sequence[str], allow_extra: bool = False):
    """Parse ``argv`` with ``key=value`` support; returns ``(namespace, extra)``.

    Unknown ``key=value`` tokens are a usage error (exit 2, argparse's message) unless ``allow_extra``.
    """
    options, extra = split_key_values(parser, argv)
    args = parser.parse_args(options)
    if extra and not allow_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, extra
