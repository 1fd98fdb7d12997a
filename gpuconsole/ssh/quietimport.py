"""Import asyncssh without the processes its import starts (issue 14: a cheaper cold path).

asyncssh's import looks for liboqs and libnettle with `ctypes.util.find_library`, which on Linux runs
`/sbin/ldconfig -p` for each name and, when a library is missing (liboqs, nearly always), `gcc` and
`ld` too: five processes and ~100 ms on every cold command. asyncssh reads no setting that skips the
probe, and we do not patch it. Instead, while asyncssh's import runs (and only then), `find_library`
is answered in-process from the dynamic linker's own cache, /etc/ld.so.cache — the file `ldconfig -p`
prints — with the same soname `ldconfig -p` would give. Whatever we cannot answer exactly (no glibc
cache, an unknown machine, a library that only the compiler's search would find) goes to the real
`find_library`, so the outcome is always what a plain import would get, only faster.
"""

from __future__ import annotations

import ctypes.util
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["CACHE_PATH", "cached_soname", "import_asyncssh"]

CACHE_PATH = Path("/etc/ld.so.cache")
_MAGIC_NEW = b"glibc-ld.so.cache1.1"
_HEADER_BYTES = 48  # magic+version 20, nlibs, len_strings, flags+pad, extension_offset, unused[3]
_ENTRY = struct.Struct("=iIIIQ")  # flags, key (soname), value (path), osversion, hwcap
# ldconfig's flags for a 64-bit libc6 ELF library of this machine (what ctypes matches as
# 'libc6,x86-64' / 'libc6,AArch64' in `ldconfig -p`): FLAG_ELF_LIBC6 | FLAG_<arch>_LIB64.
_NATIVE_FLAGS = {"x86_64": 0x0303, "aarch64": 0x0A03}
_Finder = Callable[[str], "str | None"]


def _native_flags() -> int | None:
    if not sys.platform.startswith("linux") or struct.calcsize("l") != 8:
        return None
    return _NATIVE_FLAGS.get(os.uname().machine)


def _parse_cache(data: bytes, flags_wanted: int) -> list[str] | None:
    """The sonames of the cache's native entries in file order; None if the file is not as expected."""
    start = data.find(_MAGIC_NEW)
    if start < 0 or len(data) < start + _HEADER_BYTES:
        return None
    (nlibs,) = struct.unpack_from("=I", data, start + 20)
    end = start + _HEADER_BYTES + nlibs * _ENTRY.size
    if end > len(data):
        return None
    names: list[str] = []
    for index in range(nlibs):
        flags, key, _value, _os, _hwcap = _ENTRY.unpack_from(data, start + _HEADER_BYTES + index * _ENTRY.size)
        if flags != flags_wanted:
            continue
        stop = data.find(b"\0", start + key)  # string offsets count from the new header
        if key <= 0 or stop < 0:
            return None
        names.append(data[start + key:stop].decode("utf-8", "replace"))
    # A cache read the wrong way would not name libc; then it is not trusted to say what is missing.
    return names if any(n.startswith("libc.so.") for n in names) else None


def cached_soname(name: str, cache: Path = CACHE_PATH) -> tuple[bool, str | None]:
    """(answered, soname): `ldconfig -p`'s match for lib<name>, read from the linker cache in-process.

    answered is False when the cache cannot tell (then ask the real find_library): no readable glibc
    cache, an unknown machine, or a lib<name>.so on a search path outside the cache, which ctypes
    would find with gcc/ld.
    """
    flags = _native_flags()
    try:
        data = cache.read_bytes() if flags is not None else b""
    except OSError:
        return False, None
    names = _parse_cache(data, flags) if flags is not None else None
    if names is None:
        return False, None
    prefix = f"lib{name}."
    for soname in names:
        if soname.startswith(prefix):
            return True, soname
    return (not _outside_cache(name)), None


def _outside_cache(name: str) -> bool:
    """Whether lib<name>.so exists where gcc -l or ld (LD_LIBRARY_PATH) would look beyond the cache."""
    dirs = [d for var in ("LD_LIBRARY_PATH", "LIBRARY_PATH") for d in os.environ.get(var, "").split(":") if d]
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for base in ("/usr/local/lib", "/usr/lib", "/lib", "/usr/lib64", "/lib64"):
        dirs += [base, f"{base}/{multiarch}"] if multiarch else [base]
    return any(Path(d, f"lib{name}.so").exists() for d in dirs)


def _quiet_find_library(real: _Finder) -> _Finder:
    def find_library(name: str) -> str | None:
        answered, soname = cached_soname(name)
        return soname if answered else real(name)

    return find_library


def import_asyncssh() -> None:
    """Import asyncssh once, with find_library answered from the linker cache for that import only."""
    if "asyncssh" in sys.modules:
        return
    real = ctypes.util.find_library
    setattr(ctypes.util, "find_library", _quiet_find_library(real))  # noqa: B010  (a module's function)
    try:
        import asyncssh  # noqa: F401  (the import is the point: it runs the probes now)
    finally:
        setattr(ctypes.util, "find_library", real)  # noqa: B010
