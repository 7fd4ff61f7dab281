#!/usr/bin/env python3
"""Make Mosquitto's password file for a fleet: one user per unit (user name = unit id).

Why not a loop over ``mosquitto_passwd -b``: that rewrites the whole file once per unit and
needs the mosquitto package on the provisioning machine.  This writes the same format that
Mosquitto 2.0's ``mosquitto_passwd`` writes (``$7$``: PBKDF2-HMAC-SHA512, 101 iterations,
12-byte salt; the test fixture checks a real Mosquitto accepts it) in one pass.

Usage::

    python deploy/mosquitto/mkpasswd.py units.csv --out fleetwatch.passwd \
        [--credentials-out new-credentials.csv] [--ingest-password-env FLEETWATCH_MQTT_PASSWORD]

``units.csv`` has a header with a ``unit_id`` column and optionally a ``password`` column.
Units without a password get a random one, written (with every other unit's) to
``--credentials-out`` (mode 0600) for provisioning the devices.  The ingest user
``fleetwatch`` is added with the password from the named environment variable, never from the
command line (it would show in ``ps``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

ITERATIONS = 101  # mosquitto_passwd 2.0's default
SALT_BYTES = 12
USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")  # = ingest.mqtt.UNIT_ID_RE
INGEST_USER = "fleetwatch"


class ProvisioningError(ValueError):
    """The units file or arguments are unusable; the message says which row or flag."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash Mosquitto 2.0 stores for *password*."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def password_file_text(users: Mapping[str, str]) -> str:
    """``user:hash`` lines for every (user, password), sorted by user."""
    lines = []
    for user in sorted(users):
        if not USER_RE.fullmatch(user):
            raise ProvisioningError(f"user name {user!r} is not 1-64 of [A-Za-z0-9_.:-]")
        if not users[user]:
            raise ProvisioningError(f"empty password for {user!r}")
        lines.append(f"{user}:{hash_password(users[user])}\n")
    return "".join(lines)


def read_units_csv(path: Path) -> dict[str, str | None]:
    """unit id -> password (None: generate one)."""
    out: dict[str, str | None] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "unit_id" not in reader.fieldnames:
            raise ProvisioningError(f"{path}: needs a header row with a 'unit_id' column")
        for lineno, row in enumerate(reader, start=2):
            unit = (row.get("unit_id") or "").strip()
            if not USER_RE.fullmatch(unit):
                raise ProvisioningError(
                    f"{path}:{lineno}: unit id {unit!r} is not 1-64 of [A-Za-z0-9_.:-]"
                )
            if unit == INGEST_USER:
                raise ProvisioningError(f"{path}:{lineno}: {INGEST_USER!r} is the ingest user")
            if unit in out:
                raise ProvisioningError(f"{path}:{lineno}: unit {unit!r} listed twice")
            out[unit] = (row.get("password") or "").strip() or None
    return out


def localise_conf(
    text: str,
    *,
    port: int,
    bind: str,
    persistence_dir: Path,
    password_file: Path,
    acl_file: Path,
    log_file: Path,
) -> str:
    """The shipped config with only its site-specific lines replaced (for tests, staging)."""
    repl = {
        "listener": f"listener {port} {bind}",
        "persistence_location": f"persistence_location {persistence_dir}/",
        "password_file": f"password_file {password_file}",
        "acl_file": f"acl_file {acl_file}",
        "log_dest": f"log_dest file {log_file}",
    }
    out = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        out.append(repl.get(key, line))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("units_csv", type=Path)
    p.add_argument("--out", type=Path, required=True, help="password file to write (0600)")
    p.add_argument(
        "--credentials-out",
        type=Path,
        help="CSV of unit_id,password for device provisioning (0600)",
    )
    p.add_argument(
        "--ingest-password-env",
        default="FLEETWATCH_MQTT_PASSWORD",
        help="environment variable holding the ingest user's password",
    )
    a = p.parse_args(argv)
    try:
        units = read_units_csv(a.units_csv)
        generated = {u: secrets.token_urlsafe(18) for u, pw in units.items() if pw is None}
        if generated and a.credentials_out is None:
            raise ProvisioningError(
                f"{len(generated)} units have no password: pass "
                "--credentials-out to receive the generated ones"
            )
        users = {u: pw or generated[u] for u, pw in units.items()}
        ingest_pw = os.environ.get(a.ingest_password_env)
        if not ingest_pw:
            raise ProvisioningError(f"set ${a.ingest_password_env} to the ingest user's password")
        users[INGEST_USER] = ingest_pw
        _write_private(a.out, password_file_text(users))
        if a.credentials_out is not None:
            rows = "".join(f"{u},{users[u]}\n" for u in sorted(units))
            _write_private(a.credentials_out, "unit_id,password\n" + rows)
    except (ProvisioningError, OSError) as e:
        print(f"mkpasswd: {e}", file=sys.stderr)
        return 2
    print(f"mkpasswd: wrote {len(users)} users to {a.out}", file=sys.stderr)
    return 0


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    raise SystemExit(main())
