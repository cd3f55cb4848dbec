# bnnlab — the two commands of the README are `make lab` and `make test`.
#   make lab    venv + torch + bnnlab[lab], then JupyterLab on notebooks/00_index (127.0.0.1 only)
#   make demo   the classroom demo (notebook 08) as a code-free Voilà page on 127.0.0.1
#   make test   system packages (apt, as root) + venv + lint + the whole test suite
#   make check  contributors' fast loop (no root): lint, types and the unit tests without the
#               slow, browser, TeX and apt-dependent parts
#   make bench  the benchmark table on this machine (python -m bnnlab bench)
#   make paper  the full experiments, the benchmark, every figure and table, then paper/report.pdf
SHELL    := /bin/bash
VENV     ?= .venv
PY       := $(VENV)/bin/python
PORT     ?= 8888
# The torch wheel: `make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU-only
# build (no CUDA libraries, a ~200 MB instead of a multi-GB download).
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
FMNIST_DIR  := /usr/share/datasets/fashion-mnist
APT_PKGS := dataset-fashion-mnist chromium texlive-latex-base texlive-latex-recommended \
            texlive-latex-extra texlive-pictures lmodern latexmk poppler-utils \
            gcc-arm-none-eabi libnewlib-arm-none-eabi gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
            qemu-user qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross mingw-w64 clang
ROOTFLAG := $(if $(filter 0,$(shell id -u)),--allow-root)
PYTEST_ARGS ?= -m "not long"

.PHONY: lab labdata demo test test-long venv sysdeps bench paper report-quick clean lint check test-cross

sysdeps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "[make] system packages present:$(foreach p,$(APT_PKGS), $(p))"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "[make] installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "[make] missing system packages:$$missing"; \
	  echo "[make] install them with:  sudo apt-get update && sudo apt-get install -y --no-install-recommends$$missing"; \
	  exit 1; \
	fi

$(PY):
	@echo "[make] creating the virtual environment $(VENV) ..."
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "[make] installing $(TORCH)$(if $(TORCH_INDEX), from $(TORCH_INDEX)) (the largest download) ..."
	$(PY) -m pip install --progress-bar on $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

# The stamps re-run the (isolated) build only when the build inputs change. `make lab` installs
# the lab extra only; the test extra (`make test`, `make check`) includes it.
BUILD_INPUTS := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.h ext/*.pxd)
$(VENV)/.installed-lab: $(PY) $(BUILD_INPUTS)
	@echo "[make] installing bnnlab[lab] (JupyterLab, widgets) and compiling ext/ ..."
	$(PY) -m pip install --progress-bar on -e ".[lab]"
	touch $@

$(VENV)/.installed: $(PY) $(BUILD_INPUTS)
	@echo "[make] installing bnnlab[test] (lab + pytest, playwright, ruff, mypy) and compiling ext/ ..."
	$(PY) -m pip install --progress-bar on -e ".[test]"
	touch $@ $(VENV)/.installed-lab

venv: $(VENV)/.installed

# Notebooks 07 and 08 read Fashion-MNIST from Debian's package; say so before the lab opens.
labdata:
	@missing=""; for f in $(FMNIST_DIR)/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz; do \
	  [ -f "$$f" ] || missing="$$missing $$f"; done; \
	if [ -z "$$missing" ]; then \
	  echo "[make] Fashion-MNIST found in $(FMNIST_DIR)"; \
	else \
	  echo "[make] WARNING: Fashion-MNIST is missing:$$missing"; \
	  echo "[make]   notebooks 02 and 07-09 need it (package dataset-fashion-mnist)."; \
	  echo "[make]   install it with:  sudo apt-get install -y dataset-fashion-mnist"; \
	  echo "[make]   or, with internet: the notebooks' Download button, or"; \
	  echo "[make]   bnnlab.data.load_fashion_mnist(download=True) (checked by SHA-256)"; \
	fi

lab: $(VENV)/.installed-lab labdata
	@echo "[make] starting JupyterLab on notebooks/00_index.ipynb (Ctrl-C stops)"
	$(VENV)/bin/jupyter lab --no-browser $(ROOTFLAG) --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=notebooks \
	  --LabApp.default_url=/lab/tree/00_index.ipynb

# Presentation mode: the classroom demo served by Voilà, widgets and figures only (no code),
# on 127.0.0.1 only. tests/test_voila.py starts exactly this command (DEMO_CMD).
DEMO_PORT ?= 8866
DEMO_NB   ?= notebooks/08_classroom_demo.ipynb
demo: venv
	@echo "[make] Voilà: running $(DEMO_NB) (about 30 s), then http://127.0.0.1:$(DEMO_PORT)/ (Ctrl-C stops)"
	$(VENV)/bin/voila $(DEMO_NB) --no-browser --Voila.ip=127.0.0.1 --port=$(DEMO_PORT) --Voila.port_retries=0 --strip_sources=True --theme=light

LATEXMK  := latexmk -cd -pdf -interaction=nonstopmode -halt-on-error -quiet paper/report.tex
QUICKDIR := paper/generated/quick

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

CHECK_MARKERS := not slow and not long and not e2e and not apt and not lessons
check: lint
	$(PY) -m pytest -q -p no:cacheprovider -m "$(CHECK_MARKERS)" tests

test: sysdeps venv lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest --durations=20 $(PYTEST_ARGS)
	$(MAKE) --no-print-directory report-quick

# The long fuzz and sweep variants that `make test` leaves out (about 20 minutes here).
test-long: sysdeps venv
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -m long

# The report built from the quick experiments (CI): must compile with no undefined reference.
report-quick: venv
	$(PY) -m bnnlab experiments --quick --out $(QUICKDIR)
	$(PY) -m bnnlab ladder --profile quick --out $(QUICKDIR)/ladder
	$(PY) -m bnnlab bench --quick --json $(QUICKDIR)/bench.json
	$(PY) -m bnnlab figures paper/generated --results $(QUICKDIR)
	$(LATEXMK)
	@! grep -E "There were undefined references|LaTeX Warning: (Reference|Citation) .* undefined" paper/report.log \
	  || (echo "[make] paper/report.tex has undefined references" && exit 1)
	@echo "[make] paper/report.pdf built from the quick experiments"

paper: sysdeps venv
	$(PY) -m bnnlab experiments --full --out paper/generated/results
	mkdir -p paper/generated/results/ladder && cp -rn docs/ladder-full/. paper/generated/results/ladder/
	$(PY) -m bnnlab ladder --profile full --out paper/generated/results/ladder
	$(PY) -m bnnlab bench --json paper/generated/results/bench.json
	$(PY) -m bnnlab figures paper/generated --results paper/generated/results
	$(LATEXMK)

bench: venv
	$(PY) -m bnnlab bench

# C-level kernel test (ext/bnn_ctest.c) on host gcc and clang (no OpenMP), aarch64 under
# qemu-aarch64 (NEON level), MinGW build for Windows; a missing toolchain is skipped with its
# name. `make test` runs it through tests/test_cross.py.
test-cross:
	bash ext/test_cross.sh all

clean:
	rm -rf build *.egg-info bnnlab/*.so .pytest_cache
