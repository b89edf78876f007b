# pytrim: Network Trimming for Caffe networks. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CUDA ?= 0
CUDA_ARCH ?= 90
DATASET ?= fashion-mnist
CAFFE_FLAGS := $(if $(filter 1,$(CUDA)),--cuda --cuda-arch "$(CUDA_ARCH)",)

.PHONY: help venv caffe caffe-deps caffe-cpp-tests fresh-check lenet-data lenet-baseline lenet-trim lenet-small resnet-trim seresnet-trim mobilenet-trim squeezenet-trim densenet-trim bench-speed bench-export record vgg16-trim vgg16-synthetic synthetic coverage lenet-compare lenet-relief bench bench-scale bench-peers test-peers test lint clean

help:
	@echo "make caffe            build Caffe from source (cached) and expose it in $(VENV)"
	@echo "make caffe CUDA=1 CUDA_ARCH=\"80 90\"   the same with CUDA"
	@echo "make lenet-data       LeNet data as LMDB (DATASET=fashion-mnist|mnist)"
	@echo "make lenet-baseline   train LeNet, write models/lenet/lenet.caffemodel, print top-1"
	@echo "make lenet-trim       Network Trimming on LeNet: runs/lenet-trim/report.md (TRIM_ARGS=...)"
	@echo "make resnet-trim      the loop on a ResNet (BatchNorm, Eltwise) on Fashion-MNIST: runs/resnet-trim/"
	@echo "make seresnet-trim    the loop on an SE-ResNet (squeeze-and-excitation: Scale with two bottoms)"
	@echo "make mobilenet-trim   the loop on a MobileNet v2-style net (depthwise, linear bottlenecks)"
	@echo "make squeezenet-trim  the loop on a SqueezeNet-style net (fire modules joined by Concat)"
	@echo "make densenet-trim    the loop on a DenseNet-style net (dense blocks joined by Concat, transitions)"
	@echo "make lenet-small      LeNet's loop with little data: 3,000 training images (runs/lenet-small/)"
	@echo "make vgg16-trim VGG16_WEIGHTS=... IMAGENET_VAL=... IMAGENET_TRAIN=...   the paper's VGG-16 run"
	@echo "make vgg16-synthetic  the VGG-16 machinery on filler weights and generated images"
	@echo "make synthetic NET=…  any net end to end on filler weights (report in runs/synthetic/)"
	@echo "make coverage         what pytrim can trim in ResNet-50, GoogLeNet, MobileNet, ... (benchmark)"
	@echo "make lenet-compare    pruning criteria compared on LeNet-5 and LeNet-300-100 (COMPARE_ARGS=...)"
	@echo "make lenet-relief     NN Relief iterated as its authors run it (RELIEF_ARGS=...)"
	@echo "make bench            APoZ collection overhead vs a bare forward pass"
	@echo "make bench-speed      forward time against MACs of cut model-zoo nets (runs/bench/speed.json)"
	@echo "make bench-export     every zoo and benchmark net exported to ONNX, verified, timed per runtime (runs/bench/export.json)"
	@echo "make bench-scale      statistics and a criteria sweep on 1 and 2 Ray workers (runs/bench/scale.json)"
	@echo "make bench-peers      pytrim and Torch-Pruning on the same nets, data and budget (runs/bench/peers.json; PEERS_ARGS=...)"
	@echo "make test-peers       the Torch-Pruning side's tests in .venv-peers (twins against Caffe, one prune step)"
	@echo "make record           copy the runs the docs cite into results/ and regenerate their tables"
	@echo "make test             run the test suite"
	@echo "make lint             ruff, and import-linter's layer contracts (pyproject.toml)"

venv: $(VENV)/.installed

# Debian's own python3 needs python3-venv (and python3-dev for pycaffe) first: build.sh
# --deps-only installs them with Caffe's other Debian packages (not root: it prints the line).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || { bash tools/caffe/build.sh --deps-only --python $(PYTHON) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e . 2>&1 | grep -v -e BuildBackendWarning -e "^ *[!*]" -e "^ *$$" -e "name as your package" -e "Please be careful" -e "with strategy" || true
	touch $@

caffe-deps:
	bash tools/caffe/build.sh --deps-only --python $(PYTHON)

caffe: venv
	bash tools/caffe/build.sh --python $(PY) --venv $(VENV) $(CAFFE_FLAGS) >/dev/null

# Caffe's C++ test binary (a few of its tests run in `make test`); not needed to use pytrim.
caffe-cpp-tests: caffe
	bash tools/caffe/build.sh --python $(PY) --venv $(VENV) $(CAFFE_FLAGS) --cpp-tests >/dev/null

lenet-data: caffe
	@if [ "$(DATASET)" = fashion-mnist ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null \
	  || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dataset-fashion-mnist >/dev/null; }; fi
	$(PY) data/prepare_lenet.py --dataset $(DATASET) $(if $(filter mnist,$(DATASET)),$(if $(MNIST_DIR),--from $(MNIST_DIR),--download),)

# Retrained when the data or LeNet's definition changes (a sub-make, so that the data step has
# run before the timestamps are compared).
LENET_MODEL := models/lenet/lenet.caffemodel
LENET300_MODEL := models/lenet300/lenet300.caffemodel
$(LENET_MODEL): data/lenet/SOURCE.json prototxt/lenet/solver.prototxt prototxt/lenet/train_val.prototxt
	$(PY) tools/train.py --solver prototxt/lenet/solver.prototxt --out $@ --no-eval --init
$(LENET300_MODEL): data/lenet/SOURCE.json prototxt/lenet300/solver.prototxt prototxt/lenet300/train_val.prototxt
	$(PY) tools/train.py --solver prototxt/lenet300/solver.prototxt --out $@ --no-eval --init

lenet-baseline: lenet-data
	@$(MAKE) --no-print-directory $(LENET_MODEL)
	$(PY) tools/evaluate.py --net prototxt/lenet/train_val.prototxt --weights $(LENET_MODEL)

# The baselines are (re)trained by make when the data or their definition changed; the loop
# resumes an interrupted run (TRIM_ARGS="--restart" starts over; WEIGHTS=... trims your own).
lenet-trim: lenet-data
	@$(MAKE) --no-print-directory $(LENET_MODEL)
	$(PY) tools/trim.py --schedule prototxt/lenet/trim.toml $(if $(WEIGHTS),--weights $(WEIGHTS)) $(TRIM_ARGS)

# Beyond LeNet chains, on Fashion-MNIST: a ResNet, an SE-ResNet (squeeze-and-excitation), a MobileNet
# v2-style net, a SqueezeNet-style net and a DenseNet-style net (pytrim/caffeio/benchnets.py), each trained when its caffemodel is
# missing (the schedule's train_missing_weights), then trimmed with the automated plan (layers = "auto").
resnet-trim seresnet-trim mobilenet-trim squeezenet-trim densenet-trim: %-trim: lenet-data
	$(PY) tools/trim.py --schedule prototxt/$*_fm/trim.toml $(TRIM_ARGS)

# LeNet with little data: its own baseline and the LeNet schedule on 3,000 training images and
# 1,000 validation images (runs/lenet-small/report.json).
lenet-small: lenet-data
	$(PY) data/prepare_lenet.py --dataset fashion-mnist --train-images 3000 --val-images 1000 --out data/lenet-small
	$(PY) tools/trim.py --schedule prototxt/lenet_small/trim.toml $(TRIM_ARGS)

# The paper's VGG-16 experiment. Without the weights or the data it says what is missing.
VGG16_FLAGS := $(if $(VGG16_WEIGHTS),--weights $(VGG16_WEIGHTS)) $(if $(IMAGENET_VAL),--val $(IMAGENET_VAL)) \
  $(if $(IMAGENET_VAL_LABELS),--val-labels $(IMAGENET_VAL_LABELS)) $(if $(IMAGENET_TRAIN),--train $(IMAGENET_TRAIN)) \
  $(if $(IMAGENET_TRAIN_LABELS),--train-labels $(IMAGENET_TRAIN_LABELS))
vgg16-trim: caffe
	$(PY) tools/vgg16.py $(strip $(VGG16_FLAGS) $(VGG16_ARGS))

vgg16-synthetic: caffe
	$(PY) tools/vgg16.py --synthetic $(VGG16_ARGS)

# Any net end to end on filler weights: make synthetic NET=prototxt/resnet50/deploy.prototxt
synthetic: caffe
	@test -n "$(NET)" || { echo "make synthetic NET=path/to/deploy.prototxt [SYNTHETIC_ARGS=...]"; exit 2; }
	$(PY) tools/synthetic.py --net $(NET) $(SYNTHETIC_ARGS)

# What pytrim can trim in the public model-zoo nets, full size on filler weights.
coverage: caffe
	$(PY) -m pytrim coverage $(COVERAGE_ARGS)

lenet-compare: lenet-data
	@$(MAKE) --no-print-directory $(LENET_MODEL) $(LENET300_MODEL)
	$(PY) tools/sweep_criteria.py $(COMPARE_ARGS)

# NN Relief iterated as its authors run it, on LeNet-300-100 and LeNet-5 (runs/lenet-relief/).
lenet-relief: lenet-data
	@$(MAKE) --no-print-directory $(LENET_MODEL) $(LENET300_MODEL)
	$(PY) tools/relief.py $(RELIEF_ARGS)

bench: lenet-data
	@$(MAKE) --no-print-directory $(LENET_MODEL)
	$(PY) tools/bench_apoz.py --net prototxt/lenet/train_val.prototxt --weights $(LENET_MODEL) --out runs/bench/apoz_overhead.json $(BENCH_ARGS)

bench-speed: caffe
	$(PY) tools/bench_speed.py $(SPEED_ARGS)

bench-export: caffe
	$(PY) -m pytrim bench-export $(EXPORT_ARGS)

bench-scale: lenet-data
	@$(MAKE) --no-print-directory $(LENET_MODEL) $(LENET300_MODEL)
	$(PY) tools/bench_scale.py --weights $(LENET_MODEL) $(SCALE_ARGS)

# The Torch-Pruning side (tools/peers/) runs in its own environment, from requirements-peers.txt:
# torch, Torch-Pruning, ONNX and ONNX Runtime never enter .venv, CI or the pytrim package.
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.installed: requirements-peers.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install -q -r requirements-peers.txt
	touch $@
.venv-peers: $(PEERS_VENV)/.installed

# pytrim's loop and Torch-Pruning on LeNet, resnet_fm, mobilenet_fm and squeezenet_fm (baselines
# trained where missing). Shortened: PEERS_ARGS="--nets lenet --iterations 2 --finetune-iters 300 --seed 0".
bench-peers: lenet-data $(PEERS_VENV)/.installed
	@$(MAKE) --no-print-directory $(LENET_MODEL)
	$(PY) tools/bench_peers.py --torch-python $(PEERS_VENV)/bin/python $(PEERS_ARGS)

# The twins against Caffe's own outputs and fine-tuning, and one Torch-Pruning step; the Caffe side
# (tools/peers/tests/caffe_side.py) runs in .venv first.
test-peers: caffe $(PEERS_VENV)/.installed
	rm -rf runs/test-peers && mkdir -p runs/test-peers
	$(PY) tools/peers/tests/caffe_side.py runs/test-peers
	PEERS_FIXTURES=runs/test-peers $(PEERS_VENV)/bin/python -m pytest tools/peers/tests -q $(PYTEST_ARGS)

# The results of record (docs/results.md): runs/ copied into results/, the docs' tables regenerated.
record: venv
	$(PY) -m pytrim record

test: caffe caffe-cpp-tests
	$(PY) -m pytest $(PYTEST_ARGS)

# A minimal Debian 12 (debootstrap, only git/make/python3), a clone of this repository, and the
# README's two commands inside it: what a new user on a fresh machine goes through.
fresh-check:
	bash tools/fresh-check.sh $(FRESH_ARGS)

lint: venv
	$(PY) -m ruff check pytrim tools data tests
	$(PY) -m ruff format --check pytrim tools data tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf runs .pytest_cache .ruff_cache
