"""PiiRedactor on real text: what is replaced, what never is, counts per kind.

The passages are quoted from the Python 3.11 documentation (Debian's python3.11-doc, PSF licence)
and from Boost's licence notice in Debian's libboost copyright files.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from curator_stages.tasks import DocumentBatch
from curator_stages.text.pii import PII_REDACTED_PREFIX, PiiRedactor, is_public_ip

EMAIL, IP, PHONE = "<EMAIL_ADDRESS>", "<IP_ADDRESS>", "<PHONE_NUMBER>"

SOCKET = ("host is a string representing either a hostname in internet domain notation like "
          "'daring.cwi.nl' or an IPv4 address like '100.50.200.5', and port is an integer.")
GETADDRINFO = ("[(socket.AF_INET6, socket.SOCK_STREAM,\n 6, '', "
               "('2606:2800:220:1:248:1893:25c8:1946', 80, 0, 0)),\n"
               " (socket.AF_INET, socket.SOCK_STREAM,\n 6, '', ('93.184.216.34', 80))]")
EMAILS = ("To: Penelope Pussycat <penelope@example.com>, Fabrette Pussycat "
          "<fabrette@example.com>\nFrom: Pepé Le Pew <pepe@example.com>")
#: Addresses that are private, loopback, shared or documentation ranges: never replaced.
RESERVED = [
    "2006-02-08 22:20:02,165 192.168.0.1 fbloggs  Protocol problem: connection reset",
    "The valid value is 127.0.0.1 (idlelib.rpc.LOCALHOST). One can diagnose with tcpconnect "
    "-irv 127.0.0.1 6543 in one terminal window",
    "is_private is False for the shared address space (100.64.0.0/10)",
    ">>> f'{ipaddress.IPv6Address(\"2001:db8::1000\"):s}'\n'2001:db8::1000'",
]
#: Version, section and other dotted numbers that look like addresses: never replaced.
VERSIONS = [
    "Possible values are Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE (zlib 1.2.0.1) "
    "and Z_FIXED (zlib 1.2.2.2).",
    "see section 5.2.4.2.2 of the 1999 ISO/IEC C standard [C99]",
    "This syntax is similar to the syntax specified in section 6.4.4.2 of the C99 standard",
    'Mozilla Firefox may identify itself as "Mozilla/5.0 (X11; U; Linux i686) Gecko/20071127 '
    'Firefox/2.0.0.11"',
    "Bluetooth address in a string format. (ex. b'12:23:34:45:56:67')",
    ">>> m[::2].tolist()\n[-11111111, -33333333]",
    "Released as version 100.50.200.5 of the firmware, build 93.184.216.34",
    "… and so on for the corresponding KEY/pattern pair.\n\n8.6.4.10. Class Patterns\n\n"
    "A class pattern represents a class and its positional and keyword arguments",
    ">>> addr.reverse_pointer\n'1.0.0.127.in-addr.arpa'",
]
BOOST = ("questions contact the Advanced Research and Technology Institute at 351 West 10th "
         "Street.  Indianapolis, Indiana 46202, phone 317-278-4100, fax 317-274-5902.")


def _run(stage, texts):
    table = pa.table({"id": [str(i) for i in range(len(texts))],
                      "text": pa.array(texts, type=pa.string())})
    out = stage.run([DocumentBatch(task_id="t", dataset_name="d", data=table)])[0]
    assert out.num_items == len(texts)  # a modifier never drops
    return out.data.column("text").to_pylist(), out.stage_history[-1].custom_metrics


def test_public_ips_and_emails_are_replaced_and_counted_per_kind():
    texts, metrics = _run(PiiRedactor(), [SOCKET, GETADDRINFO, EMAILS, None])
    assert texts[0] == SOCKET.replace("100.50.200.5", IP)
    assert texts[1] == GETADDRINFO.replace("2606:2800:220:1:248:1893:25c8:1946", IP).replace(
        "93.184.216.34", IP)
    assert texts[2] == ("To: Penelope Pussycat <" + EMAIL + ">, Fabrette Pussycat <" + EMAIL
                        + ">\nFrom: Pepé Le Pew <" + EMAIL + ">")
    assert texts[3] is None
    assert metrics == {"documents_modified": 3, f"{PII_REDACTED_PREFIX}ip": 3,
                       f"{PII_REDACTED_PREFIX}email": 3}


@pytest.mark.parametrize("text", RESERVED + VERSIONS)
def test_reserved_ranges_and_version_numbers_are_never_touched(text):
    texts, metrics = _run(PiiRedactor(phones=True), [text])
    assert texts == [text] and metrics == {"documents_modified": 0}


def test_the_same_address_is_replaced_out_of_a_version_context():
    texts, _ = _run(PiiRedactor(), ["server at 93.184.216.34 answered",
                                    "http://93.184.216.34/index.html", "version 93.184.216.34",
                                    "93.184.216.34. Then it answered.", "It was 93.184.216.34."])
    assert texts == [f"server at {IP} answered", f"http://{IP}/index.html",
                     "version 93.184.216.34", "93.184.216.34. Then it answered.",
                     f"It was {IP}."]


def test_is_public_ip_uses_the_ipaddress_registry():
    assert [is_public_ip(a) for a in ("93.184.216.34", "10.1.2.3", "172.16.5.4", "169.254.1.1",
                                      "192.0.2.55", "224.0.0.251", "fe80::1", "not an ip")] == [
        True, False, False, False, False, False, False, False]


def test_phones_are_optional_and_only_numbers_written_as_phones():
    texts, metrics = _run(PiiRedactor(), [BOOST])
    assert texts == [BOOST] and metrics == {"documents_modified": 0}
    texts, metrics = _run(PiiRedactor(phones=True), [BOOST, "IPv4Address(3232235521)"])
    assert texts == [BOOST.replace("317-278-4100", PHONE).replace("317-274-5902", PHONE),
                     "IPv4Address(3232235521)"]
    assert metrics == {"documents_modified": 1, f"{PII_REDACTED_PREFIX}phone": 2}


def test_kinds_can_be_turned_off_and_placeholders_set():
    texts, metrics = _run(PiiRedactor(ips=False, email_placeholder="[email]"),
                          [SOCKET, EMAILS.split("\n")[1]])
    assert texts == [SOCKET, "From: Pepé Le Pew <[email]>"]
    assert metrics == {"documents_modified": 1, f"{PII_REDACTED_PREFIX}email": 1}


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="all off"):
        PiiRedactor(emails=False, ips=False)
    with pytest.raises(ValueError, match="field 'phone_region'"):
        PiiRedactor(phones=True, phone_region="XX")
