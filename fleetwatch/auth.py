"""Bearer tokens for the console and the HTTP APIs: configured, hashed at rest, scoped.

Why this shape: the console's websocket and the CRM's pull API both need "who is this, and
what may they do" from one opaque string, without a user database.  A token is a random
string handed to a person or a program once; the service keeps only its SHA-256 (a leaked
tokens file does not leak tokens), and compares hashes with :func:`hmac.compare_digest`
against *every* configured entry, so the answer's timing says nothing about which entry came
close.  SHA-256 without salt is enough here because tokens are 256-bit random values, not
passwords: there is nothing to brute-force.

The tokens file (TOML)::

    [[token]]
    user = "D01"                      # who acts (alerts record it as ``by``)
    sha256 = "9f86d0..."              # hex digest of the token
    scopes = ["dispatcher"]           # see SCOPES

Mint one for a demo or a new dispatcher with ``python -m fleetwatch.auth --user D01 --scope
dispatcher`` (prints the token once, and the TOML entry to append).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: every scope a token may carry
SCOPES = frozenset(
    {"console:view", "dispatcher", "head_dispatcher", "crm:read", "ops:read", "admin"}
)
#: longest token accepted (anything longer is refused before hashing): a size limit on input
MAX_TOKEN_CHARS = 512
ConsoleRole = Literal["viewer", "dispatcher", "head_dispatcher"]


class TokensFileError(ValueError):
    """The tokens file is missing, not TOML, or has a bad entry; the message says which."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who presented a valid token, and what they may do."""

    user: str
    scopes: frozenset[str]

    @property
    def console_role(self) -> ConsoleRole | None:
        """The console role the scopes give (the strongest one), or None: no console access."""
        if "head_dispatcher" in self.scopes:
            return "head_dispatcher"
        if "dispatcher" in self.scopes:
            return "dispatcher"
        if "console:view" in self.scopes:
            return "viewer"
        return None

    def has(self, scope: str) -> bool:
        """True when the token carries *scope* (``admin`` carries every scope)."""
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEntry:
    """One configured token: its hash, never the token itself."""

    user: str
    sha256: bytes
    scopes: frozenset[str]

    def __post_init__(self) -> None:
        if not self.user or len(self.user) > 64:
            raise TokensFileError(f"token user {self.user!r}: 1-64 characters")
        if len(self.sha256) != 32:
            raise TokensFileError(f"token of {self.user!r}: sha256 must be 64 hex digits")
        unknown = self.scopes - SCOPES
        if unknown:
            raise TokensFileError(
                f"token of {self.user!r}: unknown scopes {sorted(unknown)} "
                f"(known: {', '.join(sorted(SCOPES))})"
            )
        if not self.scopes:
            raise TokensFileError(f"token of {self.user!r}: no scopes")

    def __repr__(self) -> str:  # the hash is not secret, but keep logs short and boring
        return f"TokenEntry(user={self.user!r}, scopes={sorted(self.scopes)})"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Authenticator:
    """Answers "whose token is this?" in constant time over the configured entries."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self.entries = tuple(entries)
        seen: set[bytes] = set()
        for e in self.entries:
            if e.sha256 in seen:
                raise TokensFileError(f"token of {e.user!r}: the same token is configured twice")
            seen.add(e.sha256)

    def verify(self, token: str | None) -> Principal | None:
        """The principal of *token*, or None (missing, too long, or not configured)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hash_token(token)
        found: TokenEntry | None = None
        for entry in self.entries:  # no early exit: every entry is compared
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        if found is None:
            return None
        return Principal(user=found.user, scopes=found.scopes)


def mint(user: str, scopes: Sequence[str]) -> tuple[str, TokenEntry]:
    """A fresh random token (shown once) and the entry to configure for it."""
    token = secrets.token_urlsafe(32)
    return token, TokenEntry(user=user, sha256=hash_token(token), scopes=frozenset(scopes))


def entry_toml(entry: TokenEntry) -> str:
    scopes = ", ".join(f'"{s}"' for s in sorted(entry.scopes))
    return (
        f'[[token]]\nuser = "{entry.user}"\nsha256 = "{entry.sha256.hex()}"\nscopes = [{scopes}]\n'
    )


def parse_tokens(text: str, *, source: str = "tokens file") -> Authenticator:
    """The :class:`Authenticator` of a tokens file's text; every problem names the entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TokensFileError(f"{source}: not valid TOML: {exc}") from exc
    raw = data.get("token", [])
    if not isinstance(raw, list):
        raise TokensFileError(f"{source}: 'token' must be an array of tables ([[token]])")
    entries = []
    for k, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise TokensFileError(f"{source}: token #{k} is not a table")
        user, digest, scopes = item.get("user"), item.get("sha256"), item.get("scopes")
        if not isinstance(user, str):
            raise TokensFileError(f"{source}: token #{k}: 'user' must be a string")
        if not isinstance(digest, str):
            raise TokensFileError(f"{source}: token #{k} ({user}): 'sha256' must be a string")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise TokensFileError(f"{source}: token #{k} ({user}): 'scopes' must be strings")
        try:
            raw_digest = bytes.fromhex(digest)
        except ValueError as exc:
            raise TokensFileError(f"{source}: token #{k} ({user}): sha256 is not hex") from exc
        try:
            entries.append(TokenEntry(user=user, sha256=raw_digest, scopes=frozenset(scopes)))
        except TokensFileError as exc:
            raise TokensFileError(f"{source}: token #{k}: {exc}") from exc
    return Authenticator(entries)


def load_tokens(path: Path) -> Authenticator:
    """Read a tokens file (``FLEETWATCH_TOKENS_FILE``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokensFileError(f"tokens file {path}: cannot read ({exc.strerror})") from exc
    return parse_tokens(text, source=f"tokens file {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fleetwatch.auth --user D01 --scope dispatcher [--append FILE]``."""
    ap = argparse.ArgumentParser(prog="python -m fleetwatch.auth", description=main.__doc__)
    ap.add_argument("--user", required=True)
    ap.add_argument("--scope", action="append", required=True, choices=sorted(SCOPES))
    ap.add_argument("--append", type=Path, help="append the entry to this tokens file")
    args = ap.parse_args(argv)
    token, entry = mint(args.user, args.scope)
    if args.append is not None:
        with args.append.open("a", encoding="utf-8") as f:
            f.write(entry_toml(entry))
    else:
        sys.stdout.write(entry_toml(entry))
    sys.stderr.write(f"token (shown once): {token}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
