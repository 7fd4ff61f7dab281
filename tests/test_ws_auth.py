"""Tokens: hashed at rest, scoped, refused when missing, wrong, too long or misconfigured."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwatch.auth import (
    MAX_TOKEN_CHARS,
    Authenticator,
    TokenEntry,
    TokensFileError,
    entry_toml,
    hash_token,
    load_tokens,
    main,
    mint,
    parse_tokens,
)


def test_a_minted_token_verifies_to_its_user_and_scopes_and_nothing_else_does() -> None:
    t1, e1 = mint("D01", ["dispatcher"])
    t2, e2 = mint("VW", ["console:view", "crm:read"])
    auth = parse_tokens(entry_toml(e1) + entry_toml(e2))
    p1, p2 = auth.verify(t1), auth.verify(t2)
    assert p1 is not None
    assert p2 is not None
    assert (p1.user, p1.console_role) == ("D01", "dispatcher")
    assert (p2.user, p2.console_role) == ("VW", "viewer")
    assert p2.has("crm:read")
    assert not p2.has("admin")
    assert auth.verify(t1[:-1]) is None
    assert auth.verify("") is None
    assert auth.verify(None) is None
    assert auth.verify("x" * (MAX_TOKEN_CHARS + 1)) is None


@given(st.text(max_size=80))
def test_no_other_string_verifies(s: str) -> None:
    token, entry = mint("D01", ["dispatcher"])
    auth = Authenticator([entry])
    assert (auth.verify(s) is not None) == (s == token)


def test_the_file_holds_hashes_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tokens.toml"
    assert main(["--user", "D02", "--scope", "head_dispatcher", "--append", str(path)]) == 0
    token = capsys.readouterr().err.split(": ")[-1].strip()
    assert token not in path.read_text()
    assert hash_token(token).hex() in path.read_text()
    p = load_tokens(path).verify(token)
    assert p is not None
    assert p.console_role == "head_dispatcher"


def test_scopes_without_console_give_no_role_and_admin_has_every_scope() -> None:
    t, e = mint("crm", ["crm:read"])
    p = Authenticator([e]).verify(t)
    assert p is not None
    assert p.console_role is None
    t, e = mint("root", ["admin"])
    p = Authenticator([e]).verify(t)
    assert p is not None
    assert p.has("ops:read")
    assert p.console_role is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[token]\n", "not valid TOML"),
        ('token = "x"', "array of tables"),
        ('[[token]]\nuser = "a"\nsha256 = "zz"\nscopes = ["dispatcher"]', "not hex"),
        ('[[token]]\nuser = "a"\nsha256 = "00"\nscopes = ["dispatcher"]', "64 hex"),
        (f'[[token]]\nuser = "a"\nsha256 = "{"0" * 64}"\nscopes = ["root"]', "unknown scopes"),
        (f'[[token]]\nuser = "a"\nsha256 = "{"0" * 64}"\nscopes = []', "no scopes"),
        ('[[token]]\nsha256 = "00"\nscopes = []', "'user'"),
    ],
)
def test_a_bad_tokens_file_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(TokensFileError, match=says):
        parse_tokens(text)


def test_the_same_token_twice_is_refused_and_entries_never_print_hashes() -> None:
    _, e = mint("a", ["dispatcher"])
    with pytest.raises(TokensFileError, match="twice"):
        Authenticator([e, TokenEntry(user="b", sha256=e.sha256, scopes=e.scopes)])
    assert e.sha256.hex() not in repr(e)


def test_a_missing_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match="cannot read"):
        load_tokens(tmp_path / "none.toml")
