#!/usr/bin/python3
"""A "stalled registry": accepts connections on 127.0.0.1:PORT and never answers.

Why: a pull or conversion from a registry that hangs (overloaded site registry, half-dead
load balancer, firewall that swallows packets after the handshake) must end at contprobe's own
timeout, not hang the CI job. Two modes:

  stall-server.py PORT                      plain TCP: the kernel completes the TCP handshake, the
                                            client's TLS ClientHello is never answered. Go clients
                                            give up on their own after a 10 s TLS handshake timeout
                                            (docker://), oras:// waits forever.
  stall-server.py PORT --tls CERT KEY       the TLS handshake completes (with the registry's
                                            certificate), then the HTTP request is never answered:
                                            the registry looks alive, no client-side timeout fires.

"Connection refused" (registry down) is a third, different case: nothing listens at all.
Connections are held open (not read, not closed) until the peer gives up or the server is stopped
(SIGTERM). Started and stopped by registry.sh stall-up / stall-down.
"""
import signal
import socket
import ssl
import sys
import threading


def main() -> int:
    port = int(sys.argv[1])
    ctx = None
    if len(sys.argv) >= 5 and sys.argv[2] == "--tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))  # loopback only (network rule)
    srv.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held = []
    lock = threading.Lock()

    def hold(conn: socket.socket, peer) -> None:
        if ctx is not None:
            try:
                conn.settimeout(30)  # a client that never finishes the handshake is dropped
                conn = ctx.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError) as e:
                print(f"stall: TLS handshake with {peer[0]}:{peer[1]} failed: {e}", flush=True)
                conn.close()
                return
        with lock:
            # keep a reference so the socket is not closed by garbage collection; drop closed ones
            held[:] = [c for c in held if c.fileno() != -1][-256:]
            held.append(conn)
        mode = "TLS established" if ctx else "TCP"
        print(f"stall: {mode} with {peer[0]}:{peer[1]}, will never answer", flush=True)

    while True:
        conn, peer = srv.accept()
        threading.Thread(target=hold, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
