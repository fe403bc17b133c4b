"""Keep secrets out of every output: secret-named variables, URL credentials, bearer tokens.

Runs inside images too (the plugin redacts what ranks write): Python 3.8, standard library only.
The host applies `redact_output` once, at the output boundary, to every document it writes.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

# A name is secret when one of its _-separated words is one of these (HF_TOKEN, AWS_SECRET_ACCESS_KEY,
# DB_PASSWORD, GITHUB_PAT). Whole words only: TOKENIZERS_PARALLELISM and KEYS_DIR are not secrets.
SECRET_WORDS = {"TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PWD", "KEY", "APIKEY",
                "CREDENTIAL", "CREDENTIALS", "AUTH", "PAT", "COOKIE", "SESSION", "PRIVATE"}
NOT_SECRET_NAMES = {"PWD", "OLDPWD"}          # the working directory, not a password
SECRET_NAME = re.compile(r"(?:^|_)(?:" + "|".join(sorted(SECRET_WORDS, key=len, reverse=True)) + r")(?:_|$)",
                         re.IGNORECASE)
MASK = "<redacted>"
# scheme://user:password@host, and proxy-style user:password@host:port without a scheme.
URL_CREDENTIALS = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)[^/\s:@]+:[^/\s@]*@")
BARE_CREDENTIALS = re.compile(r"(?<![\w/@.:-])(?P<user>[\w.~%+-]+):(?P<pw>[^\s/@:]+)@(?P<host>[\w.-]+:\d{1,5})\b")
BEARER = re.compile(r"(?i)\b(?P<kind>bearer|basic|token)(?P<sp>\s+)[A-Za-z0-9._~+/=-]{6,}")
# The value ends at a line end, or where markup or a JSON string would (a mask must not swallow the
# rest of an XML document written on one line).
AUTH_HEADER = re.compile(r"(?i)(?P<head>\b(?:proxy-)?authorization\s*[:=]\s*)(?P<value><redacted>|[^\s\"'<>\\][^\n\r\"'<>\\]*)")
# A backslash escape (JSON's \", a shell's \ ) is one unit of a value: a mask never splits one; a value
# ends before markup (`TOKEN=</failure>` in XML must not swallow the tags); an earlier mask is one value
# (redacting twice changes nothing).
ASSIGNMENT = re.compile(r"(?P<name>\b[A-Za-z_][A-Za-z0-9_]*)=(?P<value>'[^']*'|\"[^\"]*\"|<redacted>|"
                        r"(?:\\.|[^\s\"',}\]\\<>])*)")
MIN_LITERAL = 6          # shorter literal values (a "1", "yes") are not searched for in free text


def is_secret_name(name: str) -> bool:
    return name.upper() not in NOT_SECRET_NAMES and bool(SECRET_NAME.search(name))


def redact_text(text: str, mask: str = MASK) -> str:
    # Each pattern runs only where the literal it cannot match without is present: a 100 MB report
    # is then searched a few times at memory speed instead of by five regular expressions. For
    # ASCII text, lower() finds exactly what the case-insensitive patterns could start from.
    if "://" in text:
        text = URL_CREDENTIALS.sub(lambda m: m.group("scheme") + mask + "@", text)
    if "@" in text:
        text = BARE_CREDENTIALS.sub(lambda m: f"{mask}@{m.group('host')}", text)
    ascii_ = text.isascii()
    if not ascii_ or "authorization" in text.lower():
        text = AUTH_HEADER.sub(lambda m: m.group("head") + mask, text)
    low = text.lower() if ascii_ else ""
    if not ascii_ or "bearer" in low or "basic" in low or "token" in low:
        text = BEARER.sub(lambda m: m.group("kind") + m.group("sp") + mask, text)
    return text


def redact_value(name: str, value: str) -> str:
    return MASK if is_secret_name(name) else redact_text(value)


def redact_env(env: Mapping[str, str]) -> dict:
    return {k: redact_value(k, v) for k, v in env.items()}


def secret_values(env: Mapping[str, str]) -> list:
    """Literal values of secret-named variables worth searching for, longest first."""
    vals = {v for k, v in env.items() if v and len(v) >= MIN_LITERAL and is_secret_name(k)}
    return sorted(vals, key=len, reverse=True)


def redact_assignments(text: str, mask: str = MASK) -> str:
    """NAME=VALUE inside a command line or a listing: masked when NAME looks secret (--env API_TOKEN=...)."""
    if "=" not in text:
        return text
    return ASSIGNMENT.sub(lambda m: f"{m.group('name')}={mask}" if is_secret_name(m.group("name"))
                          else m.group(0), text)


def redact_text_with_env(text: str, env: Mapping[str, str], mask: str = MASK) -> str:
    """URL credentials, tokens, NAME=secret pairs, and any literal secret value taken from env.

    mask is what replaces a secret: in XML and HTML it must be the escaped form (&lt;redacted&gt;),
    or the mask itself would break the document."""
    return _redact_with(text, secret_values(env), mask)


def _redact_with(text: str, values: list, mask: str = MASK) -> str:
    text = redact_assignments(redact_text(text, mask), mask)
    for v in values:
        if v in text:
            text = text.replace(v, mask)
    return text


def output_redactor(env: Optional[Mapping[str, str]] = None, mask: str = MASK):
    """redact_output as a function of one argument, with the environment's secrets looked up once:
    a report redacts thousands of separate strings (hosts, messages) and must not rescan the
    environment for each."""
    secrets = secret_values(os.environ if env is None else env)
    return lambda text: _redact_with(text, secrets, mask)


def redact_output(text: str, env: Optional[Mapping[str, str]] = None, mask: str = MASK) -> str:
    """The one redaction applied at the output boundary to every document, whatever its format."""
    return redact_text_with_env(text, os.environ if env is None else env, mask)


def redact_obj(obj: Any, env: Optional[Mapping[str, str]] = None) -> Any:
    """Deep-redact a JSON-like object: secret-looking keys, URL credentials, NAME=secret pairs,
    and any literal value of a secret variable of env (default: this process's environment)."""
    return _redact_obj(obj, secret_values(os.environ if env is None else env), {})


def _secret_key(name: str, seen: dict) -> bool:
    key = ("key", name)
    out = seen.get(key)
    if out is None:
        out = seen[key] = is_secret_name(name)
    return out


def _redact_obj(obj: Any, secrets: list, seen: dict) -> Any:
    # The environment's secrets are looked up once per document, not once per string in it, and a
    # string repeated over 100,000 ranks (a host, a device list) is redacted once.
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and isinstance(v, str) and _secret_key(k, seen)
                    else _redact_obj(v, secrets, seen)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact_obj(v, secrets, seen) for v in obj]
    if isinstance(obj, str):
        out = seen.get(obj)
        if out is None:
            out = seen[obj] = _redact_with(obj, secrets)
        return out
    return obj
