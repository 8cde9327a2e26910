"""The README's list of codes and the code agree: every code the hub sends is documented, and every code
documented is one the hub defines (none it never sends, as 113 once was)."""

from __future__ import annotations

import re
from pathlib import Path

from hub import codes

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "sync", "workers", "inbox", "presence", "channels")
"""Every package whose code answers clients, subpackages included (hub/bots, hub/inbox, hub/admin, ...)."""
SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
HOOK_ONLY = {codes.error_expired().code}
"""110: a code for the application's hooks; the hub itself never answers it."""
NOT_ON_THE_WIRE = {codes.CONNECTION_CLOSED.code}
"""3000: the end of a session the client closed itself (its transport's own close, never a reason given)."""


def readme_codes() -> tuple[set[int], set[int]]:
    """The error codes and the disconnect codes the README's "Codes" section lists."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Codes\n", 1)[1].split("\n## ", 1)[0]
    errors, disconnects = section.split("Disconnects", 1)
    disconnects = disconnects.split("Documents (`/doc`)", 1)[0]
    listed = re.compile(r"(?<![\d-])(\d{3,4}) [a-z(]")  # "3008 slow", not the ranges "3000-3499"
    return {int(n) for n in listed.findall(errors)}, {int(n) for n in listed.findall(disconnects)}


def sent_errors() -> set[int]:
    """Error codes the hub's own code raises outside hub/codes.py: ``codes.error_<name>()`` (or the name
    imported), and ``ClientError(<number>, ...)`` written out (as hub/bots does for 503 and 504)."""
    defined = {name: fn().code for name, fn in vars(codes).items() if name.startswith("error_")}
    used: set[int] = set()
    for path in SOURCES:
        if path == ROOT / "hub" / "codes.py":
            continue
        text = path.read_text()
        local = set(re.findall(r"^def (error_[a-z_]+)\(", text, re.MULTILINE))  # a package's own helpers
        used |= {
            defined[name]
            for prefix, name in re.findall(r"(codes\.)?\b(error_[a-z_]+)\(", text)
            if name in defined and (prefix or name not in local)
        }
        used |= {int(n) for n in re.findall(r"\bClientError\(\s*(\d+)\b", text)}
    return used


def defined_disconnects() -> dict[str, int]:
    return {name: v.code for name, v in vars(codes).items() if isinstance(v, codes.DisconnectCode)}


def sent_disconnects() -> set[int]:
    """Disconnect codes the hub's own code uses (``codes.NAME`` outside hub/codes.py)."""
    defined = defined_disconnects()
    used: set[int] = set()
    for path in SOURCES:
        if path == ROOT / "hub" / "codes.py":
            continue
        for name in re.findall(r"\bcodes\.([A-Z_]+)\b", path.read_text()):
            if name in defined:
                used.add(defined[name])
    return used - NOT_ON_THE_WIRE


def test_the_error_codes_documented_are_those_the_hub_sends() -> None:
    errors, _ = readme_codes()
    assert errors == sent_errors() | HOOK_ONLY


def test_every_disconnect_code_the_hub_sends_is_documented() -> None:
    _, disconnects = readme_codes()
    missing = sent_disconnects() - disconnects
    assert not missing, f"sent but not in the README: {sorted(missing)}"


def test_every_disconnect_code_documented_is_defined() -> None:
    _, disconnects = readme_codes()
    unknown = disconnects - set(defined_disconnects().values())
    assert not unknown, f"in the README but not in hub/codes.py: {sorted(unknown)}"
