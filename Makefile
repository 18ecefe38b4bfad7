# Two entry points for a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   set up, generate a clip, track an instruction in it with the shipped model (embedded Redis,
#               one worker), then evaluate the model on held-out instructions for that clip
#   make test   set up (incl. Debian's redis-server), fetch the sample clips, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLIPS ?= $(HOME)/.cache/samstream/clips
DEMO_OUT ?= out/demo
DEMO_SEED ?= 46
DEMO_INSTRUCTION ?= the red hexagon
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup clips redis-server clean eval-set

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch==2.13.0 first: a bare `torch` requirement would pull a multi-GB CUDA build.
setup: $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"

clips:
	bash scripts/fetch_sample_clips.sh "$(CLIPS)"

redis-server:
	@[ -x /usr/bin/redis-server ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }

demo: setup
	$(BIN)/samstream synth --videos 1 --frames 90 --width 448 --height 448 --seed $(DEMO_SEED) --min-objects 4 \
		--max-objects 5 --out $(DEMO_OUT)/clip --quiet
	$(BIN)/samstream run $(DEMO_OUT)/clip/videos/scene_00001.mp4 --instruction "$(DEMO_INSTRUCTION)" --out $(DEMO_OUT)
	$(BIN)/samstream eval --data $(DEMO_OUT)/clip --quiet

eval-set: setup
	$(BIN)/samstream synth --preset eval --out data/eval

test: setup clips redis-server
	SAMSTREAM_CLIPS="$(CLIPS)" $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
