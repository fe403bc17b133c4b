"""Keep secrets out of every report: environment values and URL credentials."""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
# scheme://user:password@host  ->  scheme://<redacted>@host
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@")
MASK = "<redacted>"


def redact_text(text: str) -> str:
    return URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)


def redact_value(name: str, value: str) -> str:
    return MASK if SECRET_NAME.search(name) else redact_text(value)


def redact_env(env: Mapping[str, str]) -> dict:
    return {k: redact_value(k, v) for k, v in env.items()}


def redact_text_with_env(text: str, env: Mapping[str, str]) -> str:
    """Redact URL credentials and any literal secret value taken from env."""
    text = redact_text(text)
    for k, v in env.items():
        if SECRET_NAME.search(k) and v and len(v) >= 4:
            text = text.replace(v, MASK)
    return text


ASSIGNMENT = re.compile(r"(?P<name>\b[A-Za-z_][A-Za-z0-9_]*)=(?P<value>'[^']*'|\"[^\"]*\"|[^\s]*)")


def redact_assignments(text: str) -> str:
    """NAME=VALUE inside a command line: masked when NAME looks secret (--env API_TOKEN=...)."""
    return ASSIGNMENT.sub(lambda m: f"{m.group('name')}={MASK}" if SECRET_NAME.search(m.group("name"))
                          else m.group(0), text)


def redact_obj(obj: Any, env: Optional[Mapping[str, str]] = None) -> Any:
    """Deep-redact a JSON-like object: secret-looking keys, URL credentials, NAME=secret pairs,
    and any literal value of a secret variable of env (default: this process's environment)."""
    env = os.environ if env is None else env
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_NAME.search(k) and isinstance(v, str)
                    else redact_obj(v, env)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, env) for v in obj]
    if isinstance(obj, str):
        return redact_assignments(redact_text_with_env(obj, env))
    return obj
