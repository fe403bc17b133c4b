"""The registry's own digest of an image reference (docker://, oras://), read over the OCI
distribution API with the standard library, so a report names exactly what the registry served.

Anonymous only (a bearer token is fetched for public registries that ask for one); credentials are
never read or sent. Trust and proxies follow the pull's own environment: SSL_CERT_FILE/SSL_CERT_DIR
(the ssl module's default paths read them), https_proxy/no_proxy, and, as Go's net/http does,
never a proxy for loopback hosts. Any failure is an empty digest, never an exception: the digest
is attribution, not a reason to fail a run.
"""
from __future__ import annotations

import hashlib
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Dict, Optional

DOCKER_HUB = "registry-1.docker.io"
ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
DIGEST = re.compile(r"^sha(256:[0-9a-f]{64}|512:[0-9a-f]{128})$")
SCHEMES = ("docker", "oras")
MAX_MANIFEST = 4 << 20
LOOPBACK = re.compile(r"^(localhost|127(\.\d+){3}|\[?::1\]?)$", re.I)


@dataclass(frozen=True)
class Reference:
    registry: str      # host[:port] to talk to
    repository: str
    reference: str     # a tag or a digest


def parse(ref: str) -> Optional[Reference]:
    """docker://[HOST[:PORT]/]REPO[:TAG][@DIGEST] or oras://HOST/REPO[:TAG]; None for other schemes."""
    scheme, sep, rest = ref.partition("://")
    if not sep or scheme not in SCHEMES or not rest:
        return None
    name, _, digest = rest.partition("@")
    first, slash, remainder = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    elif scheme == "docker":
        host, path = DOCKER_HUB, name if "/" in name else f"library/{name}"
    else:
        return None
    if host in ("docker.io", "index.docker.io"):
        host = DOCKER_HUB
    repo, colon, tag = path.rpartition(":")
    if not colon or "/" in tag:
        repo, tag = path, "latest"
    if not repo:
        return None
    return Reference(host, repo, digest or tag)


def _opener(host: str) -> urllib.request.OpenerDirector:
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    direct = LOOPBACK.match(hostname) or urllib.request.proxy_bypass(hostname)
    proxies: Dict[str, str] = {} if direct else urllib.request.getproxies()
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(
        context=ssl.create_default_context()))


def _token(opener: urllib.request.OpenerDirector, challenge: str, timeout: float) -> Optional[str]:
    """An anonymous pull token for a `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge."""
    if not challenge.lower().startswith("bearer "):
        return None
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", "")
    if not realm.startswith("https://"):
        return None
    url = realm + "?" + urllib.parse.urlencode(params)
    with opener.open(url, timeout=timeout) as resp:
        doc = json.loads(resp.read(1 << 20))
    tok = doc.get("token") or doc.get("access_token")
    return tok if isinstance(tok, str) else None


def _manifest(opener: urllib.request.OpenerDirector, url: str, token: Optional[str], timeout: float) -> str:
    headers = {"Accept": ACCEPT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        given = (resp.headers.get("Docker-Content-Digest") or "").strip()
        if DIGEST.match(given):
            return given
        body = resp.read(MAX_MANIFEST + 1)   # a registry that omits the header: hash what it served
    return "" if len(body) > MAX_MANIFEST else "sha256:" + hashlib.sha256(body).hexdigest()


def manifest_digest(ref: str, timeout: float = 20.0) -> str:
    """The registry's digest of the manifest (or index) `ref` names; '' when it cannot be read."""
    r = parse(ref)
    if r is None:
        return ""
    if DIGEST.match(r.reference):
        return r.reference
    opener = _opener(r.registry)
    url = f"https://{r.registry}/v2/{r.repository}/manifests/{urllib.parse.quote(r.reference, safe='')}"
    try:
        try:
            return _manifest(opener, url, None, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                return ""
            token = _token(opener, exc.headers.get("WWW-Authenticate", ""), timeout)
            return _manifest(opener, url, token, timeout) if token else ""
    except (OSError, ValueError, urllib.error.URLError, ssl.SSLError):
        return ""
