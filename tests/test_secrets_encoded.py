"""``probecore.redact`` removes a secret in every form a protocol sends it (probecore/_secrets.py).

The end-to-end counterparts (a scripted SMTP server echoing AUTH, an IMAP server echoing LOGIN,
a webhook receiver echoing its token) are in tests/test_mail_hostile.py and
tests/test_notify_webhook.py; here each form is derived independently of the implementation
(with the stdlib encoders) and checked on its own.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest

from probecore import DeliveryContext, Secret, redact

PASSWORDS = [
    "hunter2-Kx9",               # plain
    'pa"ss\\wo rd',              # quotes, a backslash, a space
    "ünï/cødé+=?&",              # non-ASCII and URL-special characters
    "abcd",                      # short: 4 characters
    "x" * 61,                    # long
]
USERS = ["", "a", "ab", "abc", "alice@example.org", "bob"]  # every base64 alignment


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def forms(user: str, password: str) -> dict[str, str]:
    """What servers and libraries have been seen to echo, keyed by a name for the message."""
    plain = b64(f"\0{user}\0{password}")
    found = {
        "raw": password,
        "sasl-plain": plain,
        "sasl-plain-unpadded": plain.rstrip("="),
        "sasl-plain-authzid": b64(f"{user}\0{user}\0{password}"),
        "sasl-login": b64(password),
        "sasl-login-unpadded": b64(password).rstrip("="),
        "http-basic": b64(f"{user}:{password}"),
        "urlsafe-b64": base64.urlsafe_b64encode(f"{user}:{password}".encode()).decode(),
        "imap-quoted": '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"',
        "json": json.dumps(password),
        "json-ascii": json.dumps(password, ensure_ascii=True),
        "repr": repr(password),
        "quote": quote(password),
        "quote-all": quote(password, safe=""),
        "quote-plus": quote_plus(password),
        "quote-lower-hex": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(password, safe="")),
        "userinfo": f"https://{quote(user, safe='')}:{quote(password, safe='')}@hooks.example/x",
        "query": f"https://hooks.example/x?token={quote_plus(password)}&v=1",
    }
    return found


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("user", USERS)
def test_every_encoded_form_is_removed(user: str, password: str) -> None:
    for name, form in forms(user, password).items():
        text = f"535 5.7.8 Error: authentication failed: {form} (echoed)"
        scrubbed = redact(text, {password})
        assert form not in scrubbed, f"{name}: {scrubbed}"
        assert "***" in scrubbed, f"{name}: nothing redacted in {text!r}"
        assert scrubbed.startswith("535 5.7.8 Error: authentication failed:"), f"{name}: {scrubbed}"
        assert scrubbed.endswith("(echoed)"), f"{name}: {scrubbed}"


def test_a_whole_base64_word_goes_not_just_the_part_that_is_the_password() -> None:
    # The characters around the core also carry bits of the password: nothing of the word stays.
    word = b64("\0alice\0hunter2-Kx9")
    assert redact(f"AUTH PLAIN {word} refused", {"hunter2-Kx9"}) == "AUTH PLAIN *** refused"
    assert redact(f"token={word}&next", {"hunter2-Kx9"}) == "token=***&next"


def test_text_without_the_secret_is_untouched() -> None:
    text = "550 5.1.1 <bob@example.org>: Recipient address rejected: QUFBQUFB user unknown"
    assert redact(text, {"hunter2-Kx9", 'pa"ss\\wo rd'}) == text
    assert redact(text, set()) == text
    assert redact(text, {""}) == text


def test_overlapping_forms_are_one_redaction() -> None:
    password = "abcdabcd"
    text = f"x {password}{b64(password)} y"
    assert redact(text, {password}) == "x *** y"


def test_a_megabyte_of_base64_is_scrubbed_in_linear_time() -> None:
    import time

    text = "QUFB" * 262_144 + " " + b64("\0u\0hunter2-Kx9")
    started = time.perf_counter()
    scrubbed = redact(text, {"hunter2-Kx9", "another-secret-9"})
    elapsed = time.perf_counter() - started
    assert scrubbed.endswith(" ***") and len(scrubbed) == 4 * 262_144 + 4
    assert elapsed < 5.0  # quadratic backtracking would take hours; linear takes milliseconds


def test_delivery_context_scrubs_revealed_and_concealed_values_in_every_form(monkeypatch) -> None:
    monkeypatch.setenv("PC_TEST_SECRET", "hunter2-Kx9")
    ctx = DeliveryContext(5.0)
    assert ctx.reveal(Secret("env", "PC_TEST_SECRET")) == "hunter2-Kx9"
    ctx.conceal("tok/en+9=Zz")
    ctx.conceal("")  # nothing to conceal: not an empty pattern that matches everywhere
    text = (f"401 bad key {b64('hunter2-Kx9')} for ?token={quote_plus('tok/en+9=Zz')} "
            f"and {quote('tok/en+9=Zz', safe='')}")
    assert ctx.scrub(text) == "401 bad key *** for ?token=*** and ***"
