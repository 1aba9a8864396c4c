"""Images made by tools no one here wrote, run with ``kubirun run IMAGE``."""
from __future__ import annotations

import gzip
import os

from tests.conftest import kubirun
from tests.image.conftest import ok, run


def test_podman_docker_archive_runs(tool_images):
    out = ok(tool_images["docker-archive"], "sh", "-c", "test -x /bin/busybox && echo ok")
    assert out.strip() == "ok"


def test_podman_oci_archive_runs(tool_images):
    assert ok(tool_images["oci-archive"], "echo", "oci").strip() == "oci"


def test_both_podman_archives_are_one_image_in_the_store(tool_images, private_store):
    ok(tool_images["docker-archive"], "true")
    ok(tool_images["oci-archive"], "true")
    images = kubirun("images", "ls", "-q")
    assert images.returncode == 0, images.stderr
    assert len(images.stdout.split()) == 1  # the same config digest: one image, one layer
    assert len(os.listdir(private_store / "layers")) == 1


def test_gzipped_docker_archive_is_detected_by_content(tool_images, tmp_path):
    """``docker save | gzip > image.bin``: no telling name, a compressed archive."""
    packed = tmp_path / "image.bin"
    packed.write_bytes(gzip.compress(tool_images["docker-archive"].read_bytes(), 1))
    assert ok(packed, "echo", "gz").strip() == "gz"


def test_skopeo_oci_layout_directory_runs(skopeo_layout):
    assert ok(skopeo_layout, "echo", "skopeo").strip() == "skopeo"
    assert ok(f"{skopeo_layout}:busybox", "echo", "by name").strip() == "by name"


def test_skopeo_layout_with_an_unknown_name_is_one_clear_error(skopeo_layout):
    result = run(f"{skopeo_layout}:nope", "true")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "'nope'" in result.stderr, result.stderr


def test_umoci_layers_apply_whiteouts(umoci_layout):
    out = ok(f"{umoci_layout}:v2", "sh", "-c",
             "ls /data; test -e /gone && echo gone-still-there; stat -c '%a %U' /bin/suid; "
             "echo $MADE_BY; pwd")
    assert out.splitlines() == ["b", "c", "4755 root", "umoci", "/data"]


def test_umoci_base_tag_still_has_what_v2_deleted(umoci_layout):
    out = ok(f"{umoci_layout}:v1", "sh", "-c", "ls /data /gone")
    assert "a" in out.split() and "x" in out.split()


def test_umoci_layers_are_shared_between_tags(umoci_layout, private_store):
    ok(f"{umoci_layout}:v1", "true")
    ok(f"{umoci_layout}:v2", "true")
    # v1: the empty base layer of `umoci new` (if any) + one; v2 adds one more
    images = kubirun("images", "ls", "--format", "json")
    import json

    listed = json.loads(images.stdout)
    layers = [set(i["layers"]) for i in listed]
    assert len(listed) == 2
    small, big = sorted(layers, key=len)
    assert small < big
    assert len(os.listdir(private_store / "layers")) == len(big)
