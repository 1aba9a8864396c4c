# kubirun: the two commands of the README.
#   make run   install what is missing, build the demo image, run the demo
#   make test  install what is missing (test tools too), run the whole suite
# Both are idempotent and meant to be run as root on Debian/Ubuntu.

PYTHON ?= /usr/bin/python3
VENV   := .venv
PIP    := $(VENV)/bin/pip
PY     := $(VENV)/bin/python

# What the runtime needs to build and run (the cffi module, python-prctl,
# the demo image, `ps` for the demo's host half).
APT_RUN  := python3 python3-venv python3-dev gcc libc6-dev libffi-dev libcap-dev libseccomp-dev \
            busybox-static procps make tar gzip
# What the tests need besides: runc as the peer runtime, strace to count
# execve calls, GNU tar to compare extraction with; podman (with conmon) and
# containerd (with ctr and its runc shim) to drive runtimes in tests/engines.
APT_TEST := runc strace iproute2 util-linux podman conmon containerd

.PHONY: run test deps test-deps apt-run apt-test image bytecode clean

run: deps image
	$(VENV)/bin/kubirun demo ps

test: test-deps image
	$(PY) -m pytest $(PYTEST_ARGS)

deps: apt-run $(VENV)/.installed bytecode

test-deps: apt-run apt-test $(VENV)/.installed-test bytecode

# Start-up time: compile kubirun's modules now (where PYTHONDONTWRITEBYTECODE
# is set, or after an edit, every start would compile them again, ~5 ms), and
# replace pip's console script with a launcher that skips `site` (~2 ms).
bytecode: $(VENV)/.installed
	$(PY) -m compileall -q kubirun
	$(PY) tools/fast-launcher.py

image:
	$(MAKE) -C rootfs

apt-run:
	@sh tools/apt-install.sh $(APT_RUN)

apt-test:
	@sh tools/apt-install.sh $(APT_TEST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Editable "compat" mode puts the checkout on sys.path with a plain .pth
# file; the default mode's import hook costs ~9 ms at every `kubirun` start.
# Setuptools calls compat mode transitional: fall back to the default mode
# if it ever goes away (bench/start_latency.py would show the cost).
EDITABLE = $(PIP) install -q --no-build-isolation -e $(1) --config-settings editable_mode=compat \
	|| $(PIP) install -q --no-build-isolation -e $(1)

$(VENV)/.installed: $(VENV)/bin/python setup.py pyproject.toml kubirun/_native/build.py
	$(PIP) install -q --upgrade pip setuptools wheel cffi
	$(call EDITABLE,.)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(call EDITABLE,'.[test]')
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info kubirun/_native/_kernel*.so
	$(MAKE) -C rootfs clean
