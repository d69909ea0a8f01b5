"""Dataset preparation: VisDrone2019-DET and COCO 2017 from their official files to Ultralytics YOLO folders.

Submodules (imported on demand, this package imports nothing itself):

* :mod:`drconv_yolo.data.visdrone` -- ``prepare_visdrone(src, dst, ...)``;
* :mod:`drconv_yolo.data.coco` -- ``prepare_coco(src, dst, ...)``;
* :mod:`drconv_yolo.data.prepare` -- the ``prepare`` command line (``main(argv)``);
* :mod:`drconv_yolo.data._io` -- shared helpers: atomic writes, ``write_gt_json`` (the ground-truth JSON convention
  used by :mod:`drconv_yolo.evaluation`), image sizes, split folders swapped in when complete.
"""
