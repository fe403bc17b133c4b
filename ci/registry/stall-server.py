#!/usr/bin/python3
"""A "stalled registry": accepts TCP connections on 127.0.0.1:PORT and never answers.

Why: a pull or conversion from a registry that hangs (overloaded site registry, half-dead
load balancer, firewall that swallows packets after the handshake) must end at contprobe's own
timeout, not hang the CI job. A TLS client sends its ClientHello and waits for a ServerHello that
never comes; a plain HTTP client waits for a response line. The kernel completes the TCP handshake
(the socket is listening), so "connection refused" (registry down) and this case differ.

Usage: stall-server.py PORT [PIDFILE]   (started/stopped by registry.sh stall-up / stall-down)
Connections are held open (not read, not closed) until the peer gives up or the server is stopped.
"""
import os
import signal
import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    pidfile = sys.argv[2] if len(sys.argv) > 2 else None
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))  # loopback only (network rule)
    srv.listen(64)
    if pidfile:
        with open(pidfile + ".tmp", "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(pidfile + ".tmp", pidfile)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held = []
    while True:
        conn, peer = srv.accept()
        # keep a reference so the socket is not closed by garbage collection; drop closed ones
        held = [c for c in held if c.fileno() != -1][-256:]
        held.append(conn)
        print(f"stall: accepted {peer[0]}:{peer[1]}, will never answer", flush=True)


if __name__ == "__main__":
    sys.exit(main())
