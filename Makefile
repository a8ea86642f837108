# Xvision-MX. `make help` lists the targets; `make test` and `make pipeline` set everything up first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# A machine with a working NVIDIA driver gets the CUDA build of MXNet; every other machine the CPU build.
HAS_NVIDIA := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
REQUIREMENTS := $(if $(HAS_NVIDIA),requirements-gpu.txt,requirements.txt)
WEIGHTS := models/resnet-50-0000.params
# make pipeline: Open-i into data/openi, or DATA=folder-of-class-folders into data/<folder name>
DATA ?=
# with DATA: files whose names give the same first capture group are one patient, e.g. GROUP_PATTERN='^(\d+)_'
GROUP_PATTERN ?=
# with DATA of DICOM files: GROUP_BY=patient groups them by Patient ID instead (written out only as a salted hash)
GROUP_BY ?=
GROUP_ARG = $(if $(GROUP_PATTERN),--group-pattern '$(GROUP_PATTERN)') $(if $(GROUP_BY),--group-by $(GROUP_BY))
OUT ?= data/$(if $(DATA),$(notdir $(abspath $(DATA))),openi)
# make figure: the browser that draws the demo's page
CHROMIUM ?= chromium
# make demo: the bundled NIH sample (examples/nih-sample) into data/demo, or into OUT=dir given on the command line
DEMO_DATA := examples/nih-sample
DEMO_OUT = $(if $(filter command line,$(origin OUT)),$(OUT),data/demo)
# make accuracy: fold seeds, and the folder of the shared NIH sets it runs besides DATA ('none': DATA only)
SEEDS ?= 3
SHARED ?= ../shared/data
# make pipeline / accuracy / audit: the lung field as left,top,right,bottom fractions (empty: the default box); with
# FIELD=lungs make pipeline and make accuracy encode only that field
FIELD ?= whole
LUNG_BOX ?=
BOX_ARG = $(if $(LUNG_BOX),--lung-box $(LUNG_BOX))
# make onnx: the trained head to export (default: the demo's) and the ONNX file to write (default: beside it);
# make pipeline: the models folder to train into and evaluate (default: OUT/models)
MODELS ?= data/demo/models
PIPELINE_MODELS = $(if $(filter command line,$(origin MODELS)),$(MODELS),$(OUT)/models)
ONNX ?= $(MODELS)/classifier.onnx
# make exports: a folder to keep the 16-bit PNG versions of the shared NIH sets in (for make accuracy DATA=...)
KEEP ?=
# make reproduce: where it writes, and extra scraper.py options (e.g. --base-url of a mirror)
REPRO_OUT ?= data/reproduce
SCRAPER_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup browser demo figure test test-fast pipeline validate onnx reproduce bench exports accuracy audit clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(WEIGHTS) ## make .venv (python3.11), install requirements, fetch and convert the ResNet-50 weights

$(VENV)/.installed: $(REQUIREMENTS)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (MXNet 1.9.1 needs numpy<1.24, which has no wheels for newer Pythons)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(REQUIREMENTS) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS) -r requirements-dev.txt
	touch $@

$(WEIGHTS): models/weights.py | $(VENV)/.installed
	$(PY) -m models.weights --force

demo: setup ## set up, then run steps 2-5 offline on the bundled NIH chest X-rays (examples/nih-sample) into data/demo (~40 s)
	@$(MAKE) --no-print-directory pipeline DATA="$(DEMO_DATA)" OUT="$(DEMO_OUT)" GROUP_PATTERN='^(\d+)_'

figure: demo browser ## run make demo, then draw the README's picture, docs/demo-report.png: the top of its report.html in headless Chromium
	@command -v $(CHROMIUM) >/dev/null || { echo "error: make figure needs Chromium: apt-get install chromium (or CHROMIUM=path)" >&2; exit 2; }
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1400 --screenshot="$(abspath $(DEMO_OUT))/report-top.png" "file://$(abspath $(DEMO_OUT))/models/eval/report.html" 2>/dev/null
	$(PY) -c "from PIL import Image; Image.open('$(DEMO_OUT)/report-top.png').convert('RGB').quantize(colors=64).save('docs/demo-report.png', optimize=True)"
	@echo "wrote docs/demo-report.png"

test: setup $(VENV)/.installed-dev browser ## set up, then run the whole test suite
	$(PY) -m pytest tests

# Debian's chromium and a font (its recommends, which we skip, would add ~150 packages a headless page does not need)
BROWSER_PACKAGES := chromium fonts-liberation
browser: ## install headless Chromium for the page tests and make figure, where none is on PATH (apt-get, as root)
	@for b in $(CHROMIUM) chromium-browser google-chrome; do command -v $$b >/dev/null 2>&1 && exit 0; done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing headless Chromium for the page tests: apt-get install $(BROWSER_PACKAGES)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; } || \
	  echo "note: apt-get could not install Chromium: the browser tests will be skipped (docs/report.md)"; \
	else \
	  echo "note: no Chromium on PATH and no root apt-get to install it: the browser tests will be skipped (docs/report.md)"; \
	fi

test-fast: setup $(VENV)/.installed-dev ## set up, then run the tests not marked slow (no real ResNet-50, no whole pipeline: ~2 min)
	$(PY) -m pytest tests -m "not slow"

pipeline: setup ## set up, then run all five steps on Open-i into data/openi (DATA=folder: steps 2-5 on your class folders, GROUP_BY=patient for DICOM; FIELD=lungs: encode only the lung field; MODELS=dir: the models folder, default OUT/models; a changed training set gets a new head, the old one moved into MODELS/replaced-<time>/)
ifeq ($(DATA),)
	$(PY) scraper.py "$(OUT)/download"
	$(PY) -m scraper.process "$(OUT)/download" "$(OUT)/split"
else
	$(PY) -m scraper.process --from-folders "$(DATA)" "$(OUT)/split" $(GROUP_ARG)
endif
	$(PY) train.py "$(OUT)/split/train" "$(OUT)/split/test" "$(OUT)/codes/train" "$(OUT)/codes/test" --field $(FIELD) $(BOX_ARG)
	$(PY) train_model.py "$(OUT)/split/train" "$(OUT)/codes/train" "$(OUT)/split/train_labels.json" "$(PIPELINE_MODELS)" --resume --replace-changed
	$(PY) test_model.py "$(OUT)/split/test" "$(OUT)/codes/test" "$(OUT)/split/test_labels.json" "$(PIPELINE_MODELS)"
	@plots=""; for f in "$(PIPELINE_MODELS)"/eval/*.png "$(PIPELINE_MODELS)/training_curve.png"; do \
		if [ -f "$$f" ]; then plots="$$plots $$f"; fi; done; \
	echo "done: report $(PIPELINE_MODELS)/eval/report.html (open it in a browser; report.json, predictions.csv beside it); plots:$$plots"

validate: setup ## DATA=class folders [MODELS=models folder, default the demo's] [OUT=dir] [GROUP_PATTERN=regex | GROUP_BY=patient]: score a trained head on a labelled folder from elsewhere (external validation) into OUT/eval
	@test -n "$(DATA)" || { echo "error: make validate needs DATA=folder-of-class-folders (named as the head's classes)" >&2; exit 2; }
	$(PY) -m models.validate "$(MODELS)" "$(DATA)" --out "$(if $(filter command line,$(origin OUT)),$(OUT),data/validate/$(notdir $(abspath $(DATA))))" $(GROUP_ARG)

onnx: setup ## [MODELS=models folder] [ONNX=file.onnx]: export a trained head with its backbone as one ONNX file (default: the demo's), run it without MXNet with python -m models.onnx_predict
	$(PY) -m models.export "$(MODELS)" "$(ONNX)"

reproduce: setup ## the paper's experiment: scrape Open-i, its split sizes, the original recipe; the paper's figures beside ours in $(REPRO_OUT)/reproduce.json
	$(PY) scraper.py "$(REPRO_OUT)/download" $(SCRAPER_ARGS)
	$(PY) -m scraper.process "$(REPRO_OUT)/download" "$(REPRO_OUT)/split" --protocol xvision
	$(PY) train.py "$(REPRO_OUT)/split/train" "$(REPRO_OUT)/split/test" "$(REPRO_OUT)/codes/train" "$(REPRO_OUT)/codes/test"
	$(PY) train_model.py "$(REPRO_OUT)/split/train" "$(REPRO_OUT)/codes/train" "$(REPRO_OUT)/split/train_labels.json" "$(REPRO_OUT)/models" --recipe xvision --resume
	$(PY) test_model.py "$(REPRO_OUT)/split/test" "$(REPRO_OUT)/codes/test" "$(REPRO_OUT)/split/test_labels.json" "$(REPRO_OUT)/models"
	$(PY) -m bench.reproduce "$(REPRO_OUT)/models/eval/report.json" "$(REPRO_OUT)/reproduce.json"

bench/.venv/.installed: bench/requirements.txt
	test -x bench/.venv/bin/python || $(PYTHON) -m venv bench/.venv
	bench/.venv/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench: setup $(VENV)/.installed-dev bench/.venv/.installed ## measure extraction (fp32, bf16, int8) against PyTorch, head training, memory; writes bench/*.json
	$(PY) -m bench.run
	$(PY) -m bench.fidelity

exports: setup ## [KEEP=dir]: how close the codes of the shared NIH films stay, read from JPEG 2000 / JPEG DICOMs at reduced resolution and from 16-bit PNGs of 12-bit values, to their full / 8-bit codes; writes bench/exports.json
	$(PY) -m bench.exports --shared "$(SHARED)" $(if $(KEEP),--keep "$(KEEP)")

accuracy: setup ## [DATA=class folders] [GROUP_PATTERN=regex | GROUP_BY=patient]: cross-validate the head's defaults, each layout, the original recipe and two linear probes on DATA and the shared NIH sets; writes bench/accuracy.json and bench/accuracy.html
	$(PY) -m bench.accuracy $(if $(DATA),"$(DATA)") $(GROUP_ARG) --seeds $(SEEDS) --shared "$(SHARED)" --field $(FIELD) $(BOX_ARG)

audit: setup ## DATA=class folders [GROUP_PATTERN=regex | GROUP_BY=patient] [LUNG_BOX=l,t,r,b]: how much of the head's and a probe's ROC-AUC survives with the lung field hidden; writes bench/audit.json, bench/audit.png and bench/audit.html
	@test -n "$(DATA)" || { echo "error: make audit needs DATA=folder-of-class-folders" >&2; exit 2; }
	$(PY) -m bench.audit "$(DATA)" $(GROUP_ARG) $(BOX_ARG) --seeds $(SEEDS)

clean: ## remove the venv, the weights cache and the converted checkpoint
	rm -rf $(VENV) bench/.venv models/cache models/resnet-50-symbol.json models/resnet-50-0000.params models/resnet-50-classes.json
