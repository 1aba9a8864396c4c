"""What an IMAGE argument is, by content (never by its name), and the
manifest, config and layers of an image archive.

    a directory           a root filesystem used in place, or an OCI image
                          layout (``oci-layout`` + ``index.json``), or an
                          unpacked ``docker save`` (``manifest.json``)
    a tar (plain, gzip,   a root filesystem, or an image archive: ``docker
    zstd, xz, bzip2)      save`` (``manifest.json``) or an OCI layout
                          (``oci-layout``, ``index.json``, ``blobs/``)

An image archive is told from a root filesystem by its members: every one
of them has an image archive's name (``manifest.json``, ``blobs/sha256/…``,
``<64 hex>/layer.tar``…); a root filesystem's first entry already has not.
Every blob read is checked against its digest; JSON files are small, and
read whole.
"""
from __future__ import annotations

import hashlib
import os

from kubirun.base.errors import ImageError
from kubirun.image import tarstream
from kubirun.image.compression import PLAIN, Decoded, sniff
from kubirun.image.tarstream import BLOCK, HeaderParser

DIR, ROOTFS, DOCKER, OCI = "dir", "rootfs", "docker-archive", "oci-layout"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
_HEX = frozenset("0123456789abcdef")
_MAX_JSON = 16 << 20


def _is_hex(text: str, length: int = 64) -> bool:
    return len(text) == length and set(text) <= _HEX


def image_member(name: str) -> bool:
    """Could ``name`` be a member of a docker-save or OCI archive?"""
    name = name.lstrip("./") if name.startswith("./") else name
    name = name.rstrip("/")
    if name in ("", ".", "manifest.json", "repositories", "index.json", "oci-layout", "blobs"):
        return True
    parts = name.split("/")
    if parts[0] == "blobs":
        return len(parts) == 2 and parts[1].isalnum() or \
            (len(parts) == 3 and parts[1].isalnum() and set(parts[2]) <= _HEX and parts[2] != "")
    head = parts[0]
    for suffix in (".json", ".tar"):
        if head.endswith(suffix) and _is_hex(head[: -len(suffix)]) and len(parts) == 1:
            return True
    if _is_hex(head):
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in ("layer.tar", "VERSION", "json"))
    return False


# --- platforms -----------------------------------------------------------------

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_platform() -> dict:
    machine = os.uname().machine  # what platform.machine() reads, without its import
    found = {"os": "linux", "architecture": _ARCH.get(machine, machine)}
    if machine.startswith("armv"):
        found["variant"] = "v" + machine[4]
    return found


def parse_platform(text: str | None) -> dict:
    """``linux/arm64``, ``linux/arm/v7``, ``arm64``; None: this host's."""
    if not text:
        return host_platform()
    parts = text.split("/")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    if len(parts) > 3 or not all(parts):
        raise ImageError(f"--platform: expected OS/ARCH[/VARIANT], got {text!r}")
    found = {"os": parts[0], "architecture": _ARCH.get(parts[1], parts[1])}
    if len(parts) == 3:
        found["variant"] = parts[2]
    return found


def platform_text(p: dict) -> str:
    return "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)


def platform_matches(have: dict, want: dict) -> bool:
    if have.get("os") != want["os"] or have.get("architecture") != want["architecture"]:
        return False
    return "variant" not in want or have.get("variant") in (want["variant"], None)


# --- blobs: in a directory, or in an uncompressed tar --------------------------

class Span:
    """Where a member's bytes are: fd, offset, length."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd, self.start, self.length = fd, start, length


class DirMembers:
    """Members of an image directory, opened with ``RESOLVE_IN_ROOT``: a
    symlink in it cannot lead outside."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dir_fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds: list[int] = []

    def close(self) -> None:
        for fd in self._fds + [self.dir_fd]:
            os.close(fd)
        self._fds = []

    def exists(self, name: str) -> bool:
        try:
            self.span(name)
            return True
        except ImageError:
            return False

    def span(self, name: str) -> Span:
        from kubirun import _native

        try:
            fd = _native.openat2(self.dir_fd, name, os.O_RDONLY | os.O_CLOEXEC, 0,
                                 _native.RESOLVE_IN_ROOT | _native.RESOLVE_NO_MAGICLINKS)
        except OSError as err:
            raise ImageError(f"image {self.path}: {name}: {err.strerror}") from None
        self._fds.append(fd)
        size = os.fstat(fd).st_size
        return Span(fd, 0, size)


class TarMembers:
    """Members of an uncompressed tar file, indexed by one pass over its
    headers (the data is skipped with seeks, not read)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.members: dict[str, tuple[str, int, int, str]] = {}  # name -> kind, offset, size, link

    def close(self) -> None:
        pass

    @staticmethod
    def clean(name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        return "/".join(parts)

    def scan(self, stop_unless_image: bool = False) -> bool:
        """Index every member; with ``stop_unless_image``, stop (returning
        False) at the first member an image archive cannot have."""
        parser = HeaderParser()
        pos = 0
        size = os.fstat(self.fd).st_size
        while pos + BLOCK <= size:
            block = os.pread(self.fd, BLOCK, pos)
            pos += BLOCK
            if block.count(0) == BLOCK:
                break
            entry = parser.feed(block)
            if entry is None:
                data = os.pread(self.fd, parser.want, pos)
                if len(data) < parser.want:
                    raise EOFError("unexpected end of data (truncated archive)")
                pos += parser.want + (-parser.want % BLOCK)
                parser.feed_extension(data)
                continue
            if stop_unless_image and not image_member(entry.name):
                return False
            self.members[self.clean(entry.name)] = (entry.kind, pos, entry.size, entry.linkname)
            pos += entry.size + (-entry.size % BLOCK)
            if pos > size:
                raise EOFError("unexpected end of data (truncated archive)")
        return True

    def exists(self, name: str) -> bool:
        return self._resolve(name, quiet=True) is not None

    def _resolve(self, name: str, quiet: bool = False):
        name = self.clean(name)
        for _ in range(16):
            found = self.members.get(name)
            if found is None:
                break
            kind, offset, size, link = found
            if kind == tarstream.REG:
                return offset, size
            if kind == tarstream.SYM:
                base = name.rsplit("/", 1)[0] if "/" in name else ""
                target = link if link.startswith("/") else f"{base}/{link}"
                parts: list[str] = []
                for p in target.split("/"):
                    if p == "..":
                        if not parts:
                            raise ImageError(f"image {self.path}: {name} links outside the archive")
                        parts.pop()
                    elif p not in ("", "."):
                        parts.append(p)
                name = "/".join(parts)
            elif kind == tarstream.LNK:
                name = self.clean(link)
            else:
                break
        if quiet:
            return None
        raise ImageError(f"image {self.path}: no file {name!r} in the archive")

    def span(self, name: str) -> Span:
        offset, size = self._resolve(name)
        return Span(self.fd, offset, size)


# --- reading verified blobs ------------------------------------------------------

def read_member(members, name: str) -> bytes:
    span = members.span(name)
    if span.length > _MAX_JSON:
        raise ImageError(f"image {members.path}: {name} is too large ({span.length} bytes)")
    data = os.pread(span.fd, span.length, span.start)
    if len(data) != span.length:
        raise ImageError(f"image {members.path}: {name} is cut short")
    return data


def parse_json(data: bytes, what: str):
    from kubirun.base import jsonio  # bounds the nesting, as for config.json

    try:
        return jsonio.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"{what}: invalid JSON ({err})") from None


def parse_object(data: bytes, what: str) -> dict:
    """A JSON document that must be an object (an index, a manifest, a
    config): anything else is refused here, not met later as a bug."""
    value = parse_json(data, what)
    if not isinstance(value, dict):
        raise ImageError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _text(value: object) -> str | None:
    """What is wrong with a string of an image's JSON that kubirun hands
    to the kernel (a NUL, a lone surrogate), or None."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if "\0" in value:
        return f"a NUL byte in {value!r:.60}"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"not valid Unicode text: {value!r:.60}"
    return None


# The fields of an image config's ``config`` that a run uses, and their
# types (as docker decodes them: a string where a list is expected is one
# item, null is absent).
_CONFIG_STRINGS = ("WorkingDir", "User", "StopSignal")
_CONFIG_LISTS = ("Env", "Cmd", "Entrypoint")


def check_config(config: dict, what: str) -> None:
    """The image config's ``config`` object, checked where it is read:
    wrong types and strings no C string can hold are refused, naming
    the field."""
    run = config.get("config")
    if run is None:
        return
    if not isinstance(run, dict):
        raise ImageError(f"{what}: config: expected an object, got {type(run).__name__}")
    for field in _CONFIG_STRINGS + _CONFIG_LISTS:
        value = run.get(field)
        if value is None:
            continue
        items = value if field in _CONFIG_LISTS and isinstance(value, list) else [value]
        for i, item in enumerate(items):
            problem = _text(item)
            if problem is None and field == "Env" and item.startswith("="):
                problem = f"expected KEY=VALUE, got {item!r:.60}"
            if problem:
                where = f"{field}[{i}]" if isinstance(value, list) else field
                raise ImageError(f"{what}: config.{where}: {problem}")
    for field in ("Labels", "ExposedPorts", "Volumes"):
        value = run.get(field)
        if value is not None and not isinstance(value, dict):
            raise ImageError(f"{what}: config.{field}: expected an object, got {type(value).__name__}")
    for key, value in (run.get("Labels") or {}).items():
        problem = _text(key) or _text(value)
        if problem:
            raise ImageError(f"{what}: config.Labels: {problem}")
    for key in run.get("ExposedPorts") or {}:
        problem = _text(key)
        if problem:
            raise ImageError(f"{what}: config.ExposedPorts: {problem}")


def check_digest(data: bytes, digest: str, what: str) -> None:
    algorithm, _, hexpart = (digest if isinstance(digest, str) else "").partition(":")
    if algorithm not in ("sha256", "sha512") or not hexpart:
        raise ImageError(f"{what}: unsupported digest {digest!r}")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != hexpart:
        raise ImageError(f"{what}: digest mismatch (expected {digest}, got {algorithm}:{actual})")


def blob_name(digest: str, what: str) -> str:
    algorithm, _, hexpart = (digest if isinstance(digest, str) else "").partition(":")
    if algorithm not in ("sha256", "sha512") or not hexpart or not set(hexpart) <= _HEX:
        raise ImageError(f"{what}: invalid digest {digest!r}")
    return f"blobs/{algorithm}/{hexpart}"


def read_blob(members, descriptor: dict, what: str) -> bytes:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
        raise ImageError(f"{what}: a descriptor without a digest")
    data = read_member(members, blob_name(descriptor["digest"], what))
    if "size" in descriptor and descriptor["size"] != len(data):
        raise ImageError(f"{what}: size mismatch (expected {descriptor['size']}, got {len(data)})")
    check_digest(data, descriptor["digest"], what)
    return data


# --- the resolved image ------------------------------------------------------------

class LayerRef:
    def __init__(self, span: Span, diff_id: str, digest: str | None, media_type: str,
                 size: int) -> None:
        self.span = span
        self.diff_id = diff_id
        self.digest = digest  # of the blob as stored, when known
        self.media_type = media_type
        self.size = size


class Resolved:
    """An image found in an archive or a layout: its config (verified) and
    its layers, bottom first."""

    def __init__(self, kind: str, config_bytes: bytes, config_digest: str,
                 layers: list[LayerRef], names: list[str]) -> None:
        self.kind = kind
        self.config_bytes = config_bytes
        self.config = parse_object(config_bytes, "image config")
        self.config_digest = config_digest
        self.layers = layers
        self.names = names


def _diff_ids(config: dict, count: int, what: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageError(f"{what}: the image config has no rootfs.diff_ids")
    if len(diff_ids) != count:
        raise ImageError(f"{what}: {count} layers but {len(diff_ids)} diff_ids in the config")
    for d in diff_ids:
        blob_name(d, what)  # validates the form
    return diff_ids


def _check_config_platform(config: dict, want: dict | None, what: str) -> None:
    if want is None:
        return
    have = {"os": config.get("os"), "architecture": config.get("architecture")}
    if config.get("variant"):
        have["variant"] = config["variant"]
    if not platform_matches(have, want):
        raise ImageError(f"{what}: the image is for {platform_text(have)}, not {platform_text(want)}"
                         " (--platform chooses)")


def resolve_oci(members, what: str, want: dict, ref: str | None, explicit: bool) -> Resolved:
    index = parse_object(read_member(members, "index.json"), f"{what}: index.json")
    desc, names = _select(members, index, want, ref, what, depth=0)
    manifest = parse_object(read_blob(members, desc, f"{what}: manifest"), f"{what}: manifest")
    config_desc = manifest.get("config")
    config_bytes = read_blob(members, config_desc, f"{what}: config")
    config = parse_object(config_bytes, f"{what}: config")
    check_config(config, what)
    if explicit or "platform" not in desc:
        _check_config_platform(config, want, what)
    layers_desc = manifest.get("layers") or []
    if not isinstance(layers_desc, list) or not all(isinstance(d, dict) for d in layers_desc):
        raise ImageError(f"{what}: manifest: layers must be an array of descriptors")
    diff_ids = _diff_ids(config, len(layers_desc), what)
    layers = []
    for i, (d, diff_id) in enumerate(zip(layers_desc, diff_ids)):
        name = blob_name(d.get("digest"), f"{what}: layer {i + 1}")
        span = members.span(name)
        if d.get("size") is not None and d["size"] != span.length:
            raise ImageError(f"{what}: layer {i + 1}: size mismatch "
                             f"(expected {d['size']}, got {span.length})")
        layers.append(LayerRef(span, diff_id, d["digest"], d.get("mediaType", ""), span.length))
    return Resolved(OCI, config_bytes, config_desc["digest"], layers, names)


def _select(members, index: dict, want: dict, ref: str | None, what: str, depth: int):
    if depth > 4:
        raise ImageError(f"{what}: image indexes nested too deep")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise ImageError(f"{what}: the index lists no manifests")
    seen: list[str] = []
    every_name: list[str] = []  # the names the index has, for a name it has not
    named = False
    for desc in manifests:
        if not isinstance(desc, dict):
            continue
        annotations = desc.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ImageError(f"{what}: an index entry's annotations must be an object")
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        names = [n for n in (annotations.get("io.containerd.image.name"),
                             annotations.get("org.opencontainers.image.ref.name"))
                 if n and isinstance(n, str)]
        every_name += names
        if ref is not None and depth == 0 and not any(
                n == ref or n.endswith(":" + ref) or n.rpartition(":")[0] == ref for n in names):
            continue
        named = True
        media = desc.get("mediaType", "")
        if media in INDEX_TYPES:
            nested = parse_object(read_blob(members, desc, f"{what}: index"), f"{what}: index")
            try:
                found, nested_names = _select(members, nested, want, None, what, depth + 1)
            except _NoMatch as err:
                seen += err.seen
                continue
            return found, names + nested_names
        p = desc.get("platform")
        if isinstance(p, dict) and all(isinstance(v, str) for v in p.values()):
            seen.append(platform_text(p))
            if not platform_matches(p, want):
                continue
        return desc, names
    if ref is not None and depth == 0 and not named:
        there = f" (its names: {', '.join(sorted(set(every_name)))})" if every_name else \
            " (it names none)"
        raise ImageError(f"{what}: no image named {ref!r}{there}")
    raise _NoMatch(what, want, ref, seen)


class _NoMatch(ImageError):
    def __init__(self, what: str, want: dict, ref: str | None, seen: list[str]) -> None:
        self.seen = seen
        which = f"named {ref!r} " if ref else ""
        there = f" (it has {', '.join(sorted(set(seen)))})" if seen else ""
        super().__init__(f"{what}: no image {which}for {platform_text(want)}{there}; "
                         "--platform chooses another")


def resolve_docker(members, what: str, want: dict, ref: str | None, explicit: bool) -> Resolved:
    manifest = parse_json(read_member(members, "manifest.json"), f"{what}: manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError(f"{what}: manifest.json lists no image")
    entry = manifest[0]
    if ref is not None:
        matching = [m for m in manifest if isinstance(m, dict) and any(
            t == ref or t.endswith("/" + ref) or t.rpartition(":")[2] == ref
            or t.rpartition(":")[0] == ref for t in _repo_tags(m))]
        if not matching:
            raise ImageError(f"{what}: no image named {ref!r} in manifest.json")
        entry = matching[0]
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise ImageError(f"{what}: manifest.json: an entry without Config")
    config_name = entry["Config"]
    config_bytes = read_member(members, config_name)
    digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    stem = config_name.rsplit("/", 1)[-1].removesuffix(".json")
    if _is_hex(stem) and digest != "sha256:" + stem:
        raise ImageError(f"{what}: {config_name}: digest mismatch (got {digest})")
    config = parse_object(config_bytes, f"{what}: config")
    check_config(config, what)
    _check_config_platform(config, want if explicit else None, what)
    names_layers = entry.get("Layers") or []
    if not isinstance(names_layers, list) or not all(isinstance(n, str) for n in names_layers):
        raise ImageError(f"{what}: manifest.json: Layers must be an array of file names")
    diff_ids = _diff_ids(config, len(names_layers), what)
    layers = []
    for name, diff_id in zip(names_layers, diff_ids):
        span = members.span(name)
        blob_digest = None
        if name.startswith("blobs/sha256/") and _is_hex(name[13:]):
            blob_digest = "sha256:" + name[13:]
        layers.append(LayerRef(span, diff_id, blob_digest, "", span.length))
    return Resolved(DOCKER, config_bytes, digest, layers, _repo_tags(entry))


def _repo_tags(entry: dict) -> list[str]:
    """An entry's RepoTags (its names); not a list of strings, none."""
    tags = entry.get("RepoTags")
    if not isinstance(tags, list):
        return []
    return [t for t in tags if isinstance(t, str) and _text(t) is None]


# --- detection ----------------------------------------------------------------------

def directory_kind(path: str) -> str:
    """DIR (a root), OCI or DOCKER."""
    if os.path.isfile(os.path.join(path, "oci-layout")) and \
            os.path.isfile(os.path.join(path, "index.json")):
        return OCI
    if os.path.isfile(os.path.join(path, "manifest.json")) and \
            all(image_member(n) for n in os.listdir(path)):
        return DOCKER
    return DIR


def first_entries_look_like_image(fd: int) -> bool:
    """Decompress the start of a compressed tar: is its first real entry
    an image archive's?"""
    stream = Decoded(fd, 0)
    reader = tarstream.TarReader(stream)
    for entry in reader:
        name = TarMembers.clean(entry.name)
        if name == "":
            continue
        return image_member(entry.name)
    return False


def tar_kind(members: TarMembers) -> str:
    """ROOTFS, DOCKER or OCI, for an uncompressed tar (indexed when it is
    an image archive)."""
    if not members.scan(stop_unless_image=True):
        return ROOTFS
    if "oci-layout" in members.members and "index.json" in members.members:
        return OCI
    if "manifest.json" in members.members:
        return DOCKER
    return ROOTFS


def looks_like_tar(fd: int) -> tuple[bool, str]:
    """(is it a tar, possibly compressed; the compression)."""
    head = os.pread(fd, BLOCK, 0)
    kind = sniff(head)
    if kind != PLAIN:
        return True, kind
    return tarstream.is_tar_header(head), kind
