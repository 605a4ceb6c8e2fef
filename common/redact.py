"""Customer PII redaction, for stored conversations (demo feedback) and for log lines.

Each kind of identifier is replaced by a label such as `[PHONE]`. Numbers that carry a checksum are only
redacted when the checksum holds (IBAN mod-97, card and IMEI Luhn), so that order numbers, prices, dates,
speeds ("100 Mbit/s") and model numbers ("Archer AX55", "SM-G991B") survive. Phone numbers need a shape of
their own (international prefix, or a national trunk prefix and enough digits) for the same reason.
Account numbers differ by operator: the pattern is configurable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
# 13-19 digits, written plain or in groups separated by one space or dash.
CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w-])")
IMEI_GROUPED = re.compile(r"(?<![\w-])\d{2}[ -]\d{6}[ -]\d{6}[ -]\d(?![\w-])")
FIFTEEN = re.compile(r"(?<![\w-])\d{15}(?![\w-])")
# International: +CC or 00CC, then groups of digits (an optional "(0)" trunk); national: a 0 trunk prefix.
PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(0\)|[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\w])")
PHONE_NATIONAL = re.compile(
    r"(?<![\w+./-])(?:"
    r"\(\d{3}\)[ ]?\d{3}[ .-]\d{4}"  # (202) 555-0143
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 202-555-0143
    r"|0\d(?:[ .-]?\d{2}){4}"  # 06 12 34 56 78
    r"|0\d{2,4}[ /-]?\d{3,4}[ -]?\d{3,4}"  # 030 1234567, 020 7946 0958, 07700 900123
    r")(?![\w/]|\.\d)"
)
DEFAULT_ACCOUNT_PATTERN = (
    r"(?i)\b(?:account|acct|customer|contract|subscriber|kundennummer|numéro client)"
    r"(?:[ ]+(?:no\.?|number|nr\.?|id|#))?[ ]*[:#]?[ ]*([A-Z]{0,4}-?\d[\dA-Z-]{4,19})\b"
)
LABELS = ("[EMAIL]", "[IBAN]", "[CARD]", "[IMEI]", "[IMSI]", "[PHONE]", "[ACCOUNT]")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


class Redactor:
    """`redact(text)` replaces PII with labels. `account_patterns`: regexes whose group 1 (or whole match) is an account number."""

    def __init__(self, account_patterns: Iterable[str] | None = None):
        patterns = list(account_patterns) if account_patterns is not None else [DEFAULT_ACCOUNT_PATTERN]
        self.accounts = [re.compile(p) for p in patterns]

    def redact(self, text: str) -> str:
        if not text:
            return text
        kept: list[str] = []

        def iban(m: re.Match) -> str:
            if iban_ok(m.group()):
                return "[IBAN]"
            kept.append(m.group())  # IBAN-shaped but not one: no later rule may cut it into a phone number
            return f"\ue000{len(kept) - 1}\ue001"

        text = EMAIL.sub("[EMAIL]", text)
        text = IBAN.sub(iban, text)
        text = IMEI_GROUPED.sub(lambda m: "[IMEI]" if luhn_ok(_digits(m.group())) else m.group(), text)
        text = FIFTEEN.sub(self._fifteen, text)
        text = CARD.sub(self._card, text)
        text = PHONE_INTL.sub(lambda m: "[PHONE]" if 8 <= len(_digits(m.group())) <= 15 else m.group(), text)
        text = PHONE_NATIONAL.sub("[PHONE]", text)
        for pattern in self.accounts:
            text = pattern.sub(self._account, text)
        return re.sub("\ue000(\\d+)\ue001", lambda m: kept[int(m.group(1))], text) if kept else text

    @staticmethod
    def _fifteen(m: re.Match) -> str:
        # A bare 15-digit number is an IMEI when its Luhn digit holds, else an IMSI (no checksum).
        digits = m.group()
        if digits[:2] in ("34", "37") and luhn_ok(digits):
            return "[CARD]"  # American Express
        return "[IMEI]" if luhn_ok(digits) else "[IMSI]"

    @staticmethod
    def _card(m: re.Match) -> str:
        digits = _digits(m.group())
        return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group()

    @staticmethod
    def _account(m: re.Match) -> str:
        if m.re.groups < 1 or m.group(1) is None:
            return "[ACCOUNT]"
        if any(label in m.group(1) for label in LABELS):
            return m.group()
        start, end = m.span(1)
        whole = m.group()
        return whole[: start - m.start()] + "[ACCOUNT]" + whole[end - m.start():]

    def messages(self, messages: list[dict]) -> list[dict]:
        return [{**m, "content": self.redact(m.get("content") or "")} for m in messages]

