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

import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = {
    "compare": "drconv_yolo.compare",
    "prepare": "drconv_yolo.data.prepare",
    "eval": "drconv_yolo.evaluation",
    "regions": "drconv_yolo.regions",
    "bench": "drconv_yolo.bench",
    "demo": "drconv_yolo.compare",
}
NEEDS_ULTRALYTICS = ("compare", "eval", "regions", "demo")


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
