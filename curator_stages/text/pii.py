"""Redact personal data from text: e-mail addresses, public IP addresses, optionally phone numbers.

A model trained on web text can repeat what it read; e-mail addresses and the IP addresses of
people's machines are the personal data that crawls hold most. :class:`PiiRedactor` replaces
each one with a placeholder and keeps every document (a modifier never drops).

What is replaced, and what never is:

- **e-mail addresses**: ``local@domain.tld`` with an ASCII local part and a dotted domain whose
  last label is letters.
- **IP addresses** (v4 and v6) only when public: :mod:`ipaddress` says ``is_global`` and not
  multicast. Private, loopback, link-local, shared (100.64/10), documentation (192.0.2/24,
  2001:db8::/32) and other reserved ranges are left as they are: they name no one. An IPv6
  address needs three non-empty groups (``::2`` and ``1::2`` are slices in code far more often
  than addresses).
- **not IP addresses**: a dotted quad is left alone when it is part of a longer dotted number,
  name or word (``5.2.4.2.2``, ``1.0.0.127.in-addr.arpa``, ``v1.2.3.4``); when it opens a line
  as a numbered heading (``8.6.4.10. Class Patterns``); when it follows a name and ``/`` or
  ``-`` (``Firefox/2.0.0.11``, ``zlib-1.2.11.1``; a URL's ``//`` still counts as an address);
  when a version word comes right before it (``version 1.2.3.4``, ``release``, ``build``,
  ``rev``, ``section``, ``§``...); or when its four parts are single digits (``1.2.0.1``,
  ``6.4.4.2``): version and section numbers often have that shape, public addresses seldom
  (``8.8.8.8`` and a few other well-known servers, not people's machines).
- **phone numbers** (``phones=True``; needs the ``phonenumbers`` package, Google's
  libphonenumber rules, strict grouping): numbers valid for ``phone_region`` or carrying a ``+``
  country code, written with a ``+`` or with separators between digit groups.

Metrics: ``pii_redacted.<kind>`` (``email``, ``ip``, ``phone``) counts replacements, and
``documents_modified`` the documents changed (stage metrics); the run summary and the report
show the replacements by kind.
Only documents that may hold an address (one RE2 pass over the batch) reach the Python regex.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curator_stages.tasks import PII_REDACTED_PREFIX
from curator_stages.text.modifiers import TextModifier

PII_KINDS = ("email", "ip", "phone")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_EMAIL = (r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-])?@"
          r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])")
#: Not after a word character or a dot, nor after a name and "/" or "-" (product/1.2.3.4);
#: not followed by a word character or a further dotted label (5.2.4.2.2, a.b.c.d.in-addr.arpa).
_IPV4 = rf"(?<![\w.])(?<![A-Za-z][/-]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\w)"
_IPV6 = r"(?<![\w:.])(?=[0-9A-Fa-f:]*\d)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])"
_PATTERN = re.compile(rf"(?P<email>{_EMAIL})|(?P<ipv4>{_IPV4})|(?P<ipv6>{_IPV6})")
#: A version word right before a dotted quad makes it a version or section number.
_VERSION_BEFORE = re.compile(
    r"(?i)(?:\b(?:version|ver|v|release|rel|build|rev|revision|patch|update|firmware|section|"
    r"sect|sec|chapter|rfc)|§)\.?[\s:=#]*$")
#: RE2 pre-filter: documents without any of these cannot hold an address.
_CANDIDATE = r"@|\d\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]?:[0-9A-Fa-f]{0,4}:"
_PHONE_CANDIDATE = r"\d(?:[\s().\-/]*\d){6}"
#: A phone number as people write one: a "+" country code or separators between digit groups
#: (a bare run of digits is far more often a count, an id or an integer in code).
_PHONE_WRITTEN = re.compile(r"^\+|[\s.\-]")


def is_public_ip(text: str) -> bool:
    """True for a public (global, not multicast) IPv4 or IPv6 address; False for anything else."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_global and not address.is_multicast


def looks_like_version(text: str, start: int, end: int) -> bool:
    """True when the dotted quad ``text[start:end]`` reads as a version or section number."""
    if all(len(part) == 1 for part in text[start:end].split(".")):
        return True
    if (start == 0 or text[start - 1] == "\n") and text[end:end + 2].rstrip(" ") == ".":
        return True  # a numbered heading: "8.6.4.10. Class Patterns" at the start of a line
    return _VERSION_BEFORE.search(text, max(0, start - 24), start) is not None


class PiiRedactor(TextModifier):
    """Replace e-mail addresses, public IP addresses and (optionally) phone numbers with
    placeholders (see the module docstring for exactly what is and is not replaced)."""

    name = "pii_redactor"

    def __init__(self, text_field: str = "text", emails: bool = True, ips: bool = True,
                 phones: bool = False, phone_region: str = "US",
                 email_placeholder: str = "<EMAIL_ADDRESS>",
                 ip_placeholder: str = "<IP_ADDRESS>",
                 phone_placeholder: str = "<PHONE_NUMBER>", name: str | None = None) -> None:
        super().__init__(text_field)
        if not (emails or ips or phones):
            raise ValueError("stage 'pii_redactor': emails, ips and phones are all off; turn "
                             "one on or leave the stage out")
        if phones and importlib.util.find_spec("phonenumbers") is None:
            raise ValueError("stage 'pii_redactor': field 'phones': needs the phonenumbers "
                             "package, not installed here; pip install phonenumbers, or set "
                             "phones=False")
        if phones:
            import phonenumbers

            if phone_region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"stage 'pii_redactor': field 'phone_region': {phone_region!r} "
                                 "is not a region code; give a two-letter code such as 'US', "
                                 "'GB' or 'DE'")
        self.emails = emails
        self.ips = ips
        self.phones = phones
        self.phone_region = phone_region
        self.email_placeholder = email_placeholder
        self.ip_placeholder = ip_placeholder
        self.phone_placeholder = phone_placeholder
        if name:
            self.name = name

    def modify(self, texts: pa.Array) -> tuple[pa.Array, dict[str, Any]]:
        counts = dict.fromkeys(PII_KINDS, 0)
        values: list[str | None] | None = None
        if self.emails or self.ips:
            values = self._replace(texts, _CANDIDATE, self._redact_addresses, counts, values)
        if self.phones:
            values = self._replace(texts if values is None else pa.array(values, texts.type),
                                   _PHONE_CANDIDATE, self._redact_phones, counts, values)
        metrics = {f"{PII_REDACTED_PREFIX}{k}": n for k, n in counts.items() if n}
        return (texts if values is None else pa.array(values, type=texts.type)), metrics

    @staticmethod
    def _replace(texts: pa.Array, candidate: str, redact, counts: dict[str, int],
                 values: list[str | None] | None) -> list[str | None] | None:
        """Run ``redact`` on the documents the RE2 ``candidate`` pattern finds (others skip)."""
        hits = np.flatnonzero(np.asarray(
            pc.fill_null(pc.match_substring_regex(texts, candidate), False), dtype=bool))
        if len(hits) == 0:
            return values
        values = texts.to_pylist() if values is None else values
        for i in hits:
            values[i] = redact(values[i], counts)
        return values

    def _redact_addresses(self, text: str, counts: dict[str, int]) -> str:
        def replace(match: re.Match) -> str:
            kind = match.lastgroup
            found = match.group()
            if kind == "email":
                if not self.emails:
                    return found
                counts["email"] += 1
                return self.email_placeholder
            if not self.ips or not is_public_ip(found) or (
                    kind == "ipv4" and looks_like_version(text, match.start(), match.end())) or (
                    kind == "ipv6" and sum(1 for g in found.split(":") if g) < 3):
                return found
            counts["ip"] += 1
            return self.ip_placeholder

        return _PATTERN.sub(replace, text)

    def _redact_phones(self, text: str, counts: dict[str, int]) -> str:
        import phonenumbers

        parts, last = [], 0
        strict = phonenumbers.Leniency.STRICT_GROUPING
        for match in phonenumbers.PhoneNumberMatcher(text, self.phone_region, leniency=strict):
            if not _PHONE_WRITTEN.search(match.raw_string.strip("()")):
                continue
            parts += [text[last:match.start], self.phone_placeholder]
            last = match.end
            counts["phone"] += 1
        return "".join(parts) + text[last:] if parts else text
