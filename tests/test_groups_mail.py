"""Group rounds attributed per class against a real postfix + dovecot (contract 003-M): a held
queue for one mailbox (the provider's) beside two wrong passwords (the customer's) is the
provider's 10 %, not a customer failure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.test_mail_probe import PASSWORD_ENV, WRONG_ENV, _passwords, run_once  # noqa: F401 (fixture)

if TYPE_CHECKING:
    from tests.servers.mail import MailServer

pytest_plugins = ["tests.servers.mail"]


def mixed_table(check_id: str, server: MailServer, rule: str) -> str:
    """Ten pairs: s9 mails a recipient postfix refuses (provider), s7 and s8 log in with a wrong
    password (customer), the other seven are fine."""
    pairs = []
    for i in range(10):
        recipient = "blocked" if i == 9 else f"r{i}"
        sender_env = WRONG_ENV if i in (7, 8) else PASSWORD_ENV
        pairs.append(f'{{ name = "s{i}", sender = "s{i}@probe.test", sender_password = {{ env = "{sender_env}" }}, '
                     f'recipient = "{recipient}@probe.test", recipient_password = {{ env = "{PASSWORD_ENV}" }} }}')
    joined = ",\n  ".join(pairs)
    return f"""\
[[check]]
id = "{check_id}"
probe = "mail"
smtp_host = "{server.host}"
smtp_port = {server.smtp_port}
smtp_tls = "none"
receive_port = {server.imap_port}
receive_tls = "none"
deliver_within = "10s"
group = {{ failing = "{rule}" }}
mailboxes = [
  {joined},
]

"""


async def test_only_the_providers_failing_mailboxes_count_towards_its_threshold(
        tmp_path: Path, mail_server: MailServer) -> None:
    records, _ = await run_once(tmp_path, mixed_table("ten", mail_server, ">= 10%")
                                + mixed_table("twenty", mail_server, ">= 20%"))
    ten, twenty = records["ten"], records["twenty"]
    assert ten.outcome == "fail" and ten.failure is not None
    # Before: the majority (two customer failures) won, and no incident opened.
    assert (ten.failure.attribution, ten.failure.code) == ("provider", "smtp_rejected")
    assert ten.failure.message.startswith("3 of 10 members failed (failing >= 10%; provider 1, customer 2): ")
    # At 20 % the provider's one mailbox is not enough on its own; the customer's two are.
    assert twenty.outcome == "fail" and twenty.failure is not None
    assert (twenty.failure.attribution, twenty.failure.code) == ("customer", "smtp_auth")
