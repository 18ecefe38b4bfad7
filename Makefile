# Two entry points for a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   set up, fetch a real sample clip, run samstream on it (embedded Redis, one worker)
#   make test   set up (incl. Debian's redis-server), fetch the sample clips, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLIPS ?= $(HOME)/.cache/samstream/clips
DEMO_CLIP ?= $(CLIPS)/cockatoo.mp4
DEMO_OUT ?= out/demo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test setup clips redis-server clean

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

demo: setup clips
	$(BIN)/samstream run "$(DEMO_CLIP)" --instruction "the bird" --out $(DEMO_OUT) --max-frames 60

test: setup clips redis-server
	SAMSTREAM_CLIPS="$(CLIPS)" $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
