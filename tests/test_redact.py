"""contprobe.inimage.redact: secret-named variables and URL credentials never leave the process."""
from __future__ import annotations

import pytest

from contprobe.inimage.redact import MASK, redact_env, redact_obj, redact_text, redact_text_with_env, redact_value


@pytest.mark.parametrize("name", ["MY_API_TOKEN", "aws_secret_access_key", "DB_PASSWORD", "SMTP_PASSWD",
                                  "SSH_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "github_token"])
def test_secret_names_are_masked(name):
    assert redact_value(name, "abc123") == MASK
    assert redact_env({name: "abc123", "HOME": "/home/u"}) == {name: MASK, "HOME": "/home/u"}


@pytest.mark.parametrize("url, want", [
    ("http://user:pw@proxy:3128", "http://<redacted>@proxy:3128"),
    ("https://me:p%40ss@host/x?y=1", "https://<redacted>@host/x?y=1"),
    ("socks5h://a:b@h:1080", "socks5h://<redacted>@h:1080"),
    ("http://proxy:3128", "http://proxy:3128"),
    ("git@github.com:org/repo", "git@github.com:org/repo"),
])
def test_url_credentials(url, want):
    assert redact_text(f"HTTPS_PROXY={url} and more") == f"HTTPS_PROXY={want} and more"
    assert redact_value("HTTPS_PROXY", url) == want


def test_literal_secret_values_anywhere_in_text():
    env = {"MY_API_TOKEN": "supersecret123", "SHORT_KEY": "abc", "PATH": "/usr/bin"}
    text = "login with supersecret123 at /usr/bin (abc)"
    assert redact_text_with_env(text, env) == f"login with {MASK} at /usr/bin (abc)"


def test_redact_obj_deep():
    doc = {"context": {"API_KEY": "k1", "proxy": "http://u:p@h:1"}, "results": [{"message": "ftp://a:b@c/"}], "n": 3}
    assert redact_obj(doc) == {"context": {"API_KEY": MASK, "proxy": f"http://{MASK}@h:1"},
                               "results": [{"message": f"ftp://{MASK}@c/"}], "n": 3}
