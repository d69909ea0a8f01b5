"""``drconv-yolo``: the project's own subcommands; everything else goes to Ultralytics' ``yolo`` entry point.

    drconv-yolo compare  ...   train and evaluate baseline vs DRConv arms, write report/tables/plots
    drconv-yolo prepare  ...   prepare a dataset: synthetic, visdrone, coco, or the ground truth of your own (yolo)
    drconv-yolo eval     ...   Ultralytics validation + pycocotools metrics (ground truth given, prepared or built)
    drconv-yolo regions  ...   draw the guided masks (regions) each DRConv layer or block chose on an image
    drconv-yolo bench    ...   layer benchmark (DRConv2d vs nn.Conv2d); --model: DRConv configs vs their baselines
    drconv-yolo demo     ...   the built-in default: prepare the synthetic set and compare YOLOv8n with/without DRConv
    drconv-yolo contrast ...   an arm's gain on one dataset against its gain on a control dataset (two compare runs)
    drconv-yolo <anything else>   e.g. train/val/predict/export model=... : registers DRConv, then runs ``yolo``

Registration here does not depend on the start-up hook, so ``drconv-yolo train ...`` works with
``DRCONV_YOLO_AUTOLOAD=0`` too. Exit codes, the same for every subcommand: 0 done, 2 a usage or input error (one
line on stderr naming what is wrong), 130 interrupted (Ctrl-C), 1 anything unexpected (with its traceback).
"""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional

from ..errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError

#: subcommand -> module under drconv_yolo.cli holding its parser and ``run(argv) -> int``
SUBCOMMANDS = {
    "compare": "compare",
    "prepare": "prepare",
    "eval": "eval",
    "regions": "regions",
    "bench": "bench",
    "demo": "demo",
    "contrast": "contrast",
}
NEEDS_ULTRALYTICS = ("compare", "eval", "regions", "demo", "_worker")
PROG = "drconv-yolo"


def _register() -> None:
    from ..plugin import register

    register()


def run_subcommand(name: str, argv: List[str]) -> int:
    """Run one of our subcommands with the shared error handling; returns the exit code."""
    if name in NEEDS_ULTRALYTICS:
        _register()
    module = importlib.import_module(f"{__name__}.{SUBCOMMANDS.get(name, name.lstrip('_'))}")
    try:
        return int(module.run(argv) or 0)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return EXIT_USER_ERROR if isinstance(e.code, str) else int(e.code or 0)
    except UserError as e:
        print(f"{PROG} {name}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a file or folder the user named: missing, unreadable, no space left
        print(f"{PROG} {name}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch ``drconv-yolo`` arguments; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if argv and (argv[0] in SUBCOMMANDS or argv[0] == "_worker"):
        return run_subcommand(argv[0], argv[1:])
    _register()
    from ultralytics.cfg import entrypoint

    sys.argv[:] = ["yolo", *argv]  # in place: Ultralytics keeps a reference to this very list (utils.ARGV)
    entrypoint()
    return 0


if __name__ == "__main__":
    sys.exit(main())
