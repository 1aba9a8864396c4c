# kubirun: the two commands of the README.
#   make run   install what is missing, build the demo image, run the demo
#   make test  install what is missing (test tools too), run the whole suite
# Both are idempotent and meant to be run as root on Debian/Ubuntu.

PYTHON ?= /usr/bin/python3
VENV   := .venv
PIP    := $(VENV)/bin/pip
PY     := $(VENV)/bin/python

# What the runtime needs to build and run (the cffi module, python-prctl,
# the demo image, `ps` for the demo's host half, newuidmap/newgidmap for
# rootless containers with /etc/subuid ranges).
APT_RUN  := python3 python3-venv python3-dev gcc libc6-dev libffi-dev libcap-dev libseccomp-dev \
            busybox-static procps make tar gzip nftables uidmap
# What the tests need besides: runc as the peer runtime, strace to count
# execve calls, GNU tar to compare extraction with; podman (with conmon) and
# containerd (with ctr and its runc shim) to drive runtimes in tests/engines.
APT_TEST := runc strace iproute2 util-linux podman conmon containerd skopeo umoci pigz zstd \
            debootstrap

.PHONY: run test test-v2 test-images deps test-deps apt-run apt-test image bytecode clean

# The pure cgroup v2 VM (qemu; see its README): `make test` runs the
# cgroupv2-marked tests there too, the only place they are not skipped.
V2VM         ?= ../shared/v2vm/run.sh
V2VM_TIMEOUT ?= 600

run: deps image
	$(VENV)/bin/kubirun demo ps

test: test-deps image test-images
	$(PY) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-v2

# Fails the build when a test fails in the VM, or the VM itself does (125:
# harness, 124: over V2VM_TIMEOUT seconds); skipped, loudly, without the VM.
test-v2:
	@if [ -e "$(V2VM)" ]; then \
		echo "== tests/cgroupv2 in the pure cgroup v2 VM ($(V2VM))"; \
		"$(V2VM)" --timeout $(V2VM_TIMEOUT) -- "$(abspath $(PY))" -m pytest -m cgroupv2 tests/cgroupv2 \
			-q -p no:cacheprovider; \
	else \
		echo "SKIPPED: the cgroup v2 tests (tests/cgroupv2): no VM harness at $(V2VM)"; \
	fi

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

# Images made by debootstrap (Debian's mirror, ~40 s each, once): the tests
# that run them skip, saying why, if the mirror cannot be reached.
test-images:
	@$(MAKE) --no-print-directory -C rootfs debian.tar.gz redis.tar.gz \
		|| echo "WARNING: rootfs/debian.tar.gz and redis.tar.gz could not be built: their tests will skip"

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
