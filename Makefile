# drconv-yolo developer commands. Every target installs what it needs first.
PY ?= python3
# the oldest Ultralytics release we support (pyproject: ultralytics>=8.3.253,<8.5); `make test` runs the suite on it too
OLDEST_ULTRALYTICS ?= 8.3.253
OLDEST_VENV ?= .venv-oldest

.PHONY: install test test-newest test-oldest test-env demo study bench bench-model bench-deploy lint

# Every process the tests start reads Ultralytics settings from a throw-away folder (one per command), never the
# user's ~/.config/Ultralytics; and nothing is downloaded or pip-installed by Ultralytics.
TEST_TARGETS = test test-newest test-oldest test-env
$(TEST_TARGETS): export YOLO_CONFIG_DIR = $(shell mktemp -d -t drconv-yolo-settings-XXXXXX)
$(TEST_TARGETS): export YOLO_OFFLINE = 1
$(TEST_TARGETS): export YOLO_AUTOINSTALL = false

install:  ## the package (editable, with its start-up hook) and the dev tools
	$(PY) -m pip install -q -e ".[dev]"

test: install  ## the whole suite on the installed Ultralytics, then again on the oldest supported one
	$(MAKE) test-newest
	$(MAKE) test-oldest

test-newest:
	$(PY) -m pytest -q

# A virtualenv that reuses this interpreter's packages (torch, ...) through a path file, with the oldest supported
# Ultralytics installed over them and this repo installed as a wheel (start-up hook included).
test-oldest:
	test -x $(OLDEST_VENV)/bin/python || $(PY) -m venv $(OLDEST_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(OLDEST_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_system_site.pth"
	$(OLDEST_VENV)/bin/python -m pip install -q --no-deps "ultralytics==$(OLDEST_ULTRALYTICS)"
	$(OLDEST_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation --force-reinstall .
	$(OLDEST_VENV)/bin/python -c "import ultralytics; assert ultralytics.__version__ == '$(OLDEST_ULTRALYTICS)', ultralytics.__version__"
	$(OLDEST_VENV)/bin/python -m pytest -q -p no:cacheprovider -k "not wheel" tests

test-env:  ## print the settings folder the test commands use (tests check it is not the user's)
	@$(PY) -c "import os; print(os.environ['YOLO_CONFIG_DIR'])"

demo: install  ## the main job on the built-in default: synthetic data, YOLOv8n vs YOLOv8n-DRConv
	drconv-yolo demo

study: install  ## the where-DRConv-pays-off study (about 1.9 h of CPU, resumable): runs/study
	bash scripts/study.sh runs/study

bench: install  ## the layer benchmark (table + bench_results/drconv_layer.json)
	drconv-yolo bench

bench-model: install  ## the model benchmark (table + bench_results/drconv_model.json)
	drconv-yolo bench --model

bench-deploy: install  ## the deployment benchmark: exported models in onnxruntime (+ bench_results/drconv_deploy.json)
	drconv-yolo bench --deploy

lint: install
	ruff check drconv_yolo tests scripts
