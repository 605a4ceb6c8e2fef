"""PII redaction on realistic support messages; non-PII that must survive unchanged."""

import pytest

from common.redact import Redactor, iban_ok, luhn_ok

REDACTED = [
    # (text, expected)
    ("Call me on +33 6 12 34 56 78 please", "Call me on [PHONE] please"),
    ("my number is +44 (0)20 7946 0958.", "my number is [PHONE]."),
    ("reach me at +1-202-555-0143 after 6pm", "reach me at [PHONE] after 6pm"),
    ("Tel. 0049 30 1234567", "Tel. [PHONE]"),
    ("mobile: +4917012345678", "mobile: [PHONE]"),
    ("ring 06 12 34 56 78 or 06.12.34.56.78", "ring [PHONE] or [PHONE]"),
    ("UK line 020 7946 0958, mobile 07700 900123", "UK line [PHONE], mobile [PHONE]"),
    ("Festnetz 030 1234567", "Festnetz [PHONE]"),
    ("US: (202) 555-0143 or 202-555-0143", "US: [PHONE] or [PHONE]"),
    ("write to jane.doe+telco@example.co.uk now", "write to [EMAIL] now"),
    ("Email: JOHN_SMITH@mail.example.com", "Email: [EMAIL]"),
    ("IBAN DE89 3704 0044 0532 0130 00 for the refund", "IBAN [IBAN] for the refund"),
    ("iban: GB82WEST12345698765432", "iban: [IBAN]"),
    ("FR76 3000 6000 0112 3456 7890 189", "[IBAN]"),
    ("card 4111 1111 1111 1111 was charged twice", "card [CARD] was charged twice"),
    ("Mastercard 5500-0000-0000-0004", "Mastercard [CARD]"),
    ("amex 378282246310005", "amex [CARD]"),
    ("card number 4111111111111111", "card number [CARD]"),
    ("IMEI 490154203237518 is blocked", "IMEI [IMEI] is blocked"),
    ("IMEI: 49-015420-323751-8", "IMEI: [IMEI]"),
    ("my IMSI is 208011234567890", "my IMSI is [IMSI]"),
    ("account number: 12345678", "account number: [ACCOUNT]"),
    ("Customer ID AB-1234567 cannot log in", "Customer ID [ACCOUNT] cannot log in"),
    ("contract no. 99887766 ends in May", "contract no. [ACCOUNT] ends in May"),
]

KEPT = [
    "My 100 Mbit/s fibre only gives 35.5 Mbit/s since 2024-03-15.",
    "The bill on 15/03/2024 was €29.99 instead of €19.99 (order 12345).",
    "Since 01.02.2024 the router reboots at 14:30 every day.",
    "I have a Fritz!Box 7590 and a TP-Link Archer AX55; phone is a Samsung SM-G991B.",
    "Firmware 7.57 on model 7530 AX, 2 x 1 Gbit/s ports, 5 GHz band, channel 36.",
    "Plan costs $1,299.00 per year, 50 GB data, 4G/5G, 1000 minutes.",
    "Ping is 23 ms, jitter 4 ms, packet loss 0.5 %, 3 bars of signal.",
    "Ticket 4111-2222 was opened; speed test id 15893421.",
    "I called 3 times between 9 and 17 h.",
    "Version 10.2.3.4 of the app, build 20240315.",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_pii_is_redacted(text, expected):
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize("text", KEPT)
def test_non_pii_survives(text):
    assert Redactor().redact(text) == text


def test_checksums_decide():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and not iban_ok("DE88 3704 0044 0532 0130 00")
    # A card-shaped number with a wrong Luhn digit, and an IBAN-shaped one with a wrong check, are kept.
    assert Redactor().redact("ref 4111 1111 1111 1112") == "ref 4111 1111 1111 1112"
    assert Redactor().redact("code DE88 3704 0044 0532 0130 00") == "code DE88 3704 0044 0532 0130 00"


def test_account_pattern_is_configurable():
    r = Redactor(account_patterns=[r"\bTEL-\d{8}\b"])
    assert r.redact("see TEL-12345678 and account number: 12345678") == "see [ACCOUNT] and account number: 12345678"


def test_messages():
    msgs = Redactor().messages([{"role": "user", "content": "mail me: a@b.org"}])
    assert msgs == [{"role": "user", "content": "mail me: [EMAIL]"}]
