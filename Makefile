# golem-gpu-live: build live images for GPU compute nodes.
#   sudo make deps image PROFILE=gpu-node     build the USB image and the ISO
#   sudo make deps test                       run the whole test suite
PROFILE    ?= golem-provider
VERSION    ?= dev
TMP_DIR    ?= /var/tmp/golem-gpu-live
WORK_DIR   ?= $(CURDIR)/work
LOCAL_DEBS ?=
PYTEST_ARGS ?=

VENV   := $(CURDIR)/.venv
# The Python packages of the builder (see the code map in README.md).
PY_DIRS := builder stages apt_repo disk boot_test golem_live release bench
GOLEM_LIVE := $(VENV)/bin/golem-live
BUILD_ARGS := --profile $(PROFILE) --version $(VERSION) --tmp-dir $(TMP_DIR) \
	--work-dir $(WORK_DIR) $(if $(LOCAL_DEBS),--local-debs $(LOCAL_DEBS))

# Host tools the stages and tests run (Debian package names).
HOST_PACKAGES := mmdebstrap squashfs-tools xorriso grub-pc-bin grub-efi-amd64-bin \
	isolinux syslinux-common \
	grub-efi-amd64-signed shim-signed grub-common mtools dosfstools e2fsprogs fdisk \
	qemu-system-x86 ovmf dialog tmux gpg gpgv gpg-agent apt-utils dpkg-dev rsync zstd \
	python3 python3-venv python3-dialog python3-tomli-w debian-archive-keyring \
	ca-certificates openssh-client bmap-tools xz-utils sbsigntool tesseract-ocr

.PHONY: all deps venv root image iso usb plan test lint unit clean sweep boot write reproduce bench
all: image

# Host packages first: the venv needs python3-venv.
deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends $(HOST_PACKAGES)
	$(MAKE) venv

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# The live system's content (everything up to the squashfs).
root: venv
	$(GOLEM_LIVE) build $(BUILD_ARGS) --until squashfs

# Everything: the GPT USB image and the hybrid ISO, published into WORK_DIR.
image: venv
	$(GOLEM_LIVE) build $(BUILD_ARGS)

usb: venv
	$(GOLEM_LIVE) build $(BUILD_ARGS) --until usb

iso: venv
	$(GOLEM_LIVE) build $(BUILD_ARGS) --until iso

plan: venv
	$(GOLEM_LIVE) plan $(BUILD_ARGS)

# Build twice from scratch (under TMP_DIR/reproduce) and compare the images byte for byte.
reproduce: venv
	$(GOLEM_LIVE) reproduce $(BUILD_ARGS)

boot: venv
	$(GOLEM_LIVE) boot --version $(VERSION) --work-dir $(WORK_DIR)

# Write the USB image to a stick: make write DEVICE=/dev/sdX [IMAGE=...]
IMAGE ?= $(WORK_DIR)/golem-gpu-live-$(VERSION).img
write: venv
	$(if $(DEVICE),,$(error name the stick: make write DEVICE=/dev/sdX))
	$(GOLEM_LIVE) write $(IMAGE) $(DEVICE)

# This project beside Debian's live-build, written to docs/benchmarks.md (takes long).
BENCH_ARGS ?= --profile gpu-node --repeats 3 --live-build-repeats 1
bench: venv
	DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends live-build
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check $(PY_DIRS) rootfs/wizard tests
	$(VENV)/bin/mypy $(PY_DIRS) rootfs/wizard/golemwz

# Unit tests only: no root, no network, no host tools, seconds.
unit: venv
	$(VENV)/bin/python -m pytest -m 'not tools and not root and not boot' -q $(PYTEST_ARGS)

# Everything, including a full gpu-node build from Debian's archive and QEMU boots.
test: lint
	$(VENV)/bin/python -m pytest -ra --durations=30 $(PYTEST_ARGS)

sweep: venv
	$(GOLEM_LIVE) clean --sweep --tmp-dir $(TMP_DIR) --work-dir $(WORK_DIR)

clean: venv
	$(GOLEM_LIVE) clean --tmp-dir $(TMP_DIR) --work-dir $(WORK_DIR)
