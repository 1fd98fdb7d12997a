"""The exporter's TLS and basic auth, from a web config file in the format every Prometheus exporter
reads (exporter-toolkit's `--web.config.file`): `tls_server_config` (cert_file, key_file,
client_auth_type, client_ca_file, min_version, max_version) and `basic_auth_users` (bcrypt hashes).
Relative paths are relative to the file. A key this exporter does not implement is an error, never
silently ignored: an operator who asked for a protection must get it or be told."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuconsole.errors import UsageError

TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
CLIENT_AUTH = {  # exporter-toolkit's names → (verify mode, needs a CA file)
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,  # Python has no "request but do not verify": verify if given
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# A hash to check unknown users' passwords against, so a wrong user costs what a wrong password does
# (no user enumeration by timing): bcrypt of a random string, cost 10 as `htpasswd -B` makes.
_DUMMY_HASH = b"$2b$10$r0PvlUymj3w2GRNii0s/kOzUewf56yVd5T/6Eiy4ld4M5OURZy0ia"
_CACHE_MAX = 1024
BCRYPT_RE = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A validated web config: an SSL context to wrap the listener with, and the users' hashes."""

    source: Path
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set)  # SHA-256 of the pairs verified
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header names a user and their password; no users: everyone.
        bcrypt costs ~50 ms a check by design, so a verified (user, password) pair is remembered by
        its SHA-256 (as exporter-toolkit does) and a 15-second scrape interval costs one check."""
        if not self.users:
            return True
        user, password = _basic_credentials(header)
        if user is None or password is None:
            return False
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode()))).digest()
        with self._lock:
            if key in self._verified:
                return True
        import bcrypt

        known = self.users.get(user)
        try:
            ok = bcrypt.checkpw(password.encode(), known or _DUMMY_HASH) and known is not None
        except ValueError:  # a hash bcrypt cannot read was refused at load; this is belt and braces
            ok = False
        if ok:  # only successes: wrong guesses must not grow the cache or get cheaper to try
            with self._lock:
                if len(self._verified) >= _CACHE_MAX:
                    self._verified.clear()
                self._verified.add(key)
        return ok


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header:
        return None, None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def load_web_config(path: Path) -> WebConfig:
    """Read and check `path`; every problem is one UsageError line naming the file and the key."""
    import yaml

    def bad(problem: str) -> UsageError:
        return UsageError(f"web config {path}: {problem}")

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise bad(exc.strerror or str(exc)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bad(f"not valid YAML ({str(exc).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise bad("must be a mapping of tls_server_config and basic_auth_users")
    unknown = sorted(set(data) - {"tls_server_config", "basic_auth_users"})
    if unknown:
        raise bad(f"{unknown[0]}: not supported by gpuconsole's exporter (tls_server_config, basic_auth_users)")
    tls = _tls_context(data.get("tls_server_config"), path.parent, bad)
    users = _users(data.get("basic_auth_users"), bad)
    return WebConfig(source=path, tls=tls, users=users)


def _tls_context(raw: Any, base: Path, bad: Any) -> ssl.SSLContext | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad("tls_server_config: must be a mapping")
    unknown = sorted(set(raw) - TLS_KEYS)
    if unknown:
        raise bad(f"tls_server_config.{unknown[0]}: not supported (supported: {', '.join(sorted(TLS_KEYS))})")
    for key in raw:
        if not isinstance(raw[key], str):
            raise bad(f"tls_server_config.{key}: must be a string")
    if "cert_file" not in raw or "key_file" not in raw:
        raise bad("tls_server_config: needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(base / raw["cert_file"], base / raw["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise bad(f"tls_server_config: cannot load cert_file/key_file ({exc.strerror or exc})") from None
    mode_name = raw.get("client_auth_type", "NoClientCert")
    if mode_name not in CLIENT_AUTH:
        raise bad(f"tls_server_config.client_auth_type: {mode_name!r} is not one of {', '.join(CLIENT_AUTH)}")
    context.verify_mode = CLIENT_AUTH[mode_name]
    if "client_ca_file" in raw:
        try:
            context.load_verify_locations(base / raw["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise bad(f"tls_server_config.client_ca_file: cannot load ({exc.strerror or exc})") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise bad(f"tls_server_config: client_auth_type {mode_name} needs client_ca_file")
    for key, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in raw:
            if raw[key] not in TLS_VERSIONS:
                raise bad(f"tls_server_config.{key}: {raw[key]!r} is not one of {', '.join(TLS_VERSIONS)}")
            setattr(context, attr, TLS_VERSIONS[raw[key]])
    return context


def _users(raw: Any, bad: Any) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise bad("basic_auth_users: must map each user name to a bcrypt hash")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise bad(f"basic_auth_users: {str(user)[:40]!r} is not a user name")
        if not isinstance(hashed, str) or not _is_bcrypt(hashed):
            raise bad(f"basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)")
        users[user] = hashed.encode("ascii")
    return users


def _is_bcrypt(hashed: str) -> bool:
    """`$2a$`, `$2b$` or `$2y$`, a two-digit cost, 53 characters of salt and hash."""
    return BCRYPT_RE.fullmatch(hashed) is not None
