"""``drconv-yolo``: the project's own subcommands; everything else goes to Ultralytics' ``yolo`` entry point.

    drconv-yolo compare  ...   train and evaluate baseline vs DRConv arms, write report/tables/plots
    drconv-yolo prepare  ...   prepare a dataset: synthetic, visdrone or coco
    drconv-yolo eval     ...   Ultralytics validation + pycocotools metrics on a prepared ground truth
    drconv-yolo regions  ...   draw the guided masks (regions) each DRConv layer chose on an image
    drconv-yolo bench    ...   layer benchmark: DRConv2d vs nn.Conv2d
    drconv-yolo demo     ...   the built-in default: prepare the synthetic set and compare YOLOv8n with/without DRConv
    drconv-yolo <anything else>   e.g. train/val/predict/export model=... : registers DRConv, then runs ``yolo``

Registration here does not depend on the start-up hook, so ``drconv-yolo train ...`` works with
``DRCONV_YOLO_AUTOLOAD=0`` too.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional, Sequence

SUBCOMMANDS = {
    "compare": "drconv_yolo.compare",
    "prepare": "drconv_yolo.data.prepare",
    "eval": "drconv_yolo.evaluation",
    "regions": "drconv_yolo.regions",
    "bench": "drconv_yolo.bench",
    "demo": "drconv_yolo.compare",
}
NEEDS_ULTRALYTICS = ("compare", "eval", "regions", "demo")


class HelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to option help unless the help mentions a default or X is None/False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def key_value_options(argv: Sequence[str]) -> List[str]:
    """Ultralytics-style ``key=value`` tokens -> ``--key value``; ``--max-det`` style keys -> ``--max_det``."""
    out = []
    for tok in argv:
        if not tok.startswith("-") and "=" in tok:
            key, value = tok.split("=", 1)
            out += [f"--{key.replace('-', '_')}", value]
        elif tok.startswith("--") and "-" in tok[2:].split("=", 1)[0]:
            key, eq, value = tok[2:].partition("=")
            out.append("--" + key.replace("-", "_") + eq + value)
        else:
            out.append(tok)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch ``drconv-yolo`` arguments; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if argv and argv[0] in SUBCOMMANDS:
        if argv[0] in NEEDS_ULTRALYTICS:  # works with the start-up hook turned off too
            from .plugin import register

            register()
        module = importlib.import_module(SUBCOMMANDS[argv[0]])
        entry = getattr(module, "demo_main" if argv[0] == "demo" else "main")
        return int(entry(argv[1:]) or 0)
    from .plugin import register

    register()
    from ultralytics.cfg import entrypoint

    sys.argv[:] = ["yolo", *argv]  # in place: Ultralytics keeps a reference to this very list (utils.ARGV)
    entrypoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
