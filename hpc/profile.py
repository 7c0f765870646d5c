"""Reading settings files (profiles, sweep files): one place for the checks a user's TOML goes through.

`read_toml` names a folder as a folder, a missing file as missing and bad TOML by its first error line;
`check_keys` names every unknown key with the closest known one ("did you mean ..."), so a misspelt setting is
never silently ignored.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path

from arith.errors import InputError


def read_toml(path: str | Path, what: str) -> dict:
    """The TOML table in `path`; `what` names the file in errors ("profile", "sweep file")."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path}: is a folder, not a TOML file (give the file, e.g. {path}/NAME.toml)")
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path}: not valid TOML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: unreadable ({exc.strerror or type(exc).__name__})") from None


def closest(word: str, known: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return match[0] if match else None


def check_keys(raw: dict, known: Iterable[str], where: str) -> None:
    """InputError naming the unknown keys of `raw`, each with the closest known key when there is one."""
    known = set(known)
    unknown = sorted(set(raw) - known)
    if not unknown:
        return
    parts = []
    for key in unknown:
        guess = closest(key, known)
        parts.append(f"{key!r}" + (f" (did you mean {guess!r}?)" if guess else ""))
    raise InputError(f"{where}: unknown key(s) {', '.join(parts)}; known: {', '.join(sorted(known))}")
