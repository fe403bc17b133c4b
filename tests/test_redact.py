"""contprobe.inimage.redact: secret-named variables and URL credentials never leave the process."""
from __future__ import annotations

import os

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


def test_a_finished_launch_log_keeps_no_host_secret(tmp_path, monkeypatch):
    """The image can print what the host passed into it; the log on disk keeps it only masked."""
    from contprobe import launch
    monkeypatch.setenv("HF_TOKEN", "hf_s3cr3tvalue42")
    log = tmp_path / "launch.log"
    log.write_bytes(b"rank 0: token hf_s3cr3tvalue42\n" + b"x" * (3 << 20) + b"\nproxy http://u:pw1@p:3128/ \xff\n")
    launch.redact_log(str(log))
    out = log.read_bytes()
    assert b"hf_s3cr3tvalue42" not in out and b"pw1" not in out and out.count(b"<redacted>") == 2
    assert out.endswith(b"\xff\n") and os.listdir(tmp_path) == ["launch.log"]


def test_long_runs_do_not_make_the_url_pattern_quadratic():
    """A scheme is at most 32 characters at a word start: a 4 MB run of letters before '://' used to
    take minutes (every start position scanned to the end of the run). The alarm is a hang guard."""
    import signal
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("redaction hung")))
    signal.alarm(20)
    try:
        assert redact_text("a" * (4 << 20) + " https://u:pw@h/").endswith("https://<redacted>@h/")
    finally:
        signal.alarm(0)
