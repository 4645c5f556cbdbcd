"""A module with no library at all: raw sockets speaking the Dareplane dialect.

Stands in for a module written in another language: greets with ``Connected to raw``, splits
commands on ``;``, answers ``UP`` with ``1`` and ``GET_PCOMMS`` with the names, and on
``EMIT|{"target": t, "cmd": c, "payload": {...}}`` writes the callback ``t|c|{json}`` back on the
same connection, as Dareplane modules do. ``CLOSE`` exits.
"""

import json
import os
import socket
import sys
import threading

port = int(sys.argv[sys.argv.index("--port") + 1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(8)
print(f"raw module listening on {port}", flush=True)


def serve(conn: socket.socket) -> None:
    conn.sendall(b"Connected to raw\n")
    buf = b""
    while True:
        data = conn.recv(4096)
        if not data:
            return
        buf += data
        *msgs, buf = buf.split(b";")
        for m in msgs:
            cmd, _, payload = m.decode().strip().partition("|")
            if cmd == "UP":
                conn.sendall(b"1")
            elif cmd == "GET_PCOMMS":
                conn.sendall(b"EMIT|STOP|CLOSE|GET_PCOMMS|UP")
            elif cmd == "EMIT":
                p = json.loads(payload)
                conn.sendall(f"{p['target']}|{p['cmd']}|{json.dumps(p['payload'])}".encode())
            elif cmd == "CLOSE":
                print("raw module closing", flush=True)
                os._exit(0)


while True:
    try:
        c, _ = srv.accept()
    except OSError:
        break
    threading.Thread(target=serve, args=(c,), daemon=True).start()
