"""Datasets: the built-in synthetic set, VisDrone2019-DET and COCO 2017 from their official files, as Ultralytics
YOLO folders plus a ground-truth JSON for pycocotools (formats in :mod:`drconv_yolo.io`), and the ground truth of a
user's own Ultralytics dataset.

Submodules (imported on demand, this package imports nothing itself):

* :mod:`drconv_yolo.data.synthetic` -- ``generate(root, ...)``, the dataset; :mod:`drconv_yolo.data.scene` draws
  one image of it;
* :mod:`drconv_yolo.data.visdrone` -- ``prepare_visdrone(src, dst, ...)``;
* :mod:`drconv_yolo.data.coco` -- ``prepare_coco(src, dst, ...)``;
* :mod:`drconv_yolo.data.yolo` -- a user's own Ultralytics dataset: its splits as Ultralytics lists them,
  ``dataset_fingerprint``, ``resolve_ground_truth`` / ``build_ground_truth`` (COCO JSON from YOLO labels),
  ``prepare_yolo``;
* :mod:`drconv_yolo.data.splits` -- what preparing any split shares: choosing splits, placing images, a work
  folder committed in one atomic step;
* :mod:`drconv_yolo.data.summary` -- progress lines and the summary a preparation run prints and writes.

The command line is :mod:`drconv_yolo.cli.prepare`.
"""
