"""host.proxy: proxy variables, when an image is pulled or a build bootstraps from a registry."""
from __future__ import annotations

import os

from contprobe.checks import Check, HostOptions, failed, passed, skipped
from contprobe.inimage.redact import redact_text

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")


def check_proxy(opts: HostOptions, env=None) -> Check:
    env = os.environ if env is None else env
    present = {v: env[v] for v in PROXY_VARS if env.get(v)}
    all_set = passed("set: " + ", ".join(f"{k}={redact_text(v)}" for k, v in present.items()))
    # Only a site that names a proxy needs one; elsewhere the network may be direct or transparent.
    if not (opts.pulls or opts.build) or not opts.site_proxy:
        return all_set if present else skipped("no pull or build through a site proxy in this run")
    missing = [v for v in PROXY_VARS if v not in present]
    if missing and not present:
        return failed("proxy-missing", f"no proxy variable set for a pull or build (site proxy {opts.site_proxy}): "
                      + ", ".join(missing))
    if missing:
        return failed("proxy-missing", "set only in one case: " + ", ".join(present) + "; missing " + ", ".join(missing))
    return all_set
