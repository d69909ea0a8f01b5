"""Datasets: the built-in synthetic set, and VisDrone2019-DET and COCO 2017 from their official files, as Ultralytics
YOLO folders plus a ground-truth JSON for pycocotools (formats in :mod:`drconv_yolo.io`).

Submodules (imported on demand, this package imports nothing itself):

* :mod:`drconv_yolo.data.synthetic` -- ``generate(root, ...)``, the dataset; :mod:`drconv_yolo.data.scene` draws
  one image of it;
* :mod:`drconv_yolo.data.visdrone` -- ``prepare_visdrone(src, dst, ...)``;
* :mod:`drconv_yolo.data.coco` -- ``prepare_coco(src, dst, ...)``;
* :mod:`drconv_yolo.data.splits` -- what preparing any split shares: choosing splits, placing images, a work
  folder swapped in when complete;
* :mod:`drconv_yolo.data.summary` -- progress lines and the summary a preparation run prints and writes.

The command line is :mod:`drconv_yolo.cli.prepare`.
"""
