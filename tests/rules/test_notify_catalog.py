"""The alert message catalog (rules/locale/<lang>/LC_MESSAGES/alerts.po + .mo): every text the notifier uses is
in both languages, the compiled .mo files match their .po sources, and placeholders survive translation."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import rules.notify as notify
from rules.actions import KINDS

LANGS = ("zh-CN", "en")
PO = {lang: notify.LOCALE_DIR / notify.GETTEXT_LANG[lang] / "LC_MESSAGES" / "alerts.po" for lang in LANGS}


def parse_po(path: Path) -> dict[str, str]:
    """msgid -> msgstr of a .po file (single-line entries; the header is skipped)."""
    pairs = re.findall(r'^msgid "(.*)"\nmsgstr "(.*)"$', path.read_text(encoding="utf-8"), re.M)
    return {ast.literal_eval(f'"{i}"'): ast.literal_eval(f'"{s}"') for i, s in pairs if i}


def used_msgids() -> set[str]:
    """Every msgid rules/notify.py looks up: its label tables and its literal _("...") calls."""
    src = Path(notify.__file__).read_text(encoding="utf-8")
    literal = set(re.findall(r'\b_\("((?:[^"\\]|\\.)*)"\)', src))
    tables = {*notify._KIND_TEXT.values(), *notify._SEVERITY_TEXT.values(), *notify._TRANSITION_TEXT.values()}
    return literal | tables


def test_every_text_in_both_catalogs() -> None:
    zh, en = parse_po(PO["zh-CN"]), parse_po(PO["en"])
    assert set(zh) == set(en)
    used = used_msgids()
    assert len(used) > 25
    assert used <= set(zh), sorted(used - set(zh))
    assert set(notify._KIND_TEXT) == set(KINDS)  # every alert kind has a text
    for msgid, text in zh.items():
        assert text and text != msgid, msgid  # translated
        assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", msgid)), msgid


@pytest.mark.parametrize("lang", LANGS)
def test_compiled_mo_matches_po(lang: str) -> None:
    """Edit the .po, then `msgfmt -o alerts.mo alerts.po`: a stale .mo fails here."""
    notify.catalog.cache_clear()
    cat = notify.catalog(lang)
    for msgid, text in parse_po(PO[lang]).items():
        assert cat.gettext(msgid) == text, (lang, msgid)
