"""An unmodified-style Dareplane module: dareplane-utils' own DefaultServer, Dareplane layout.

Started the way Dareplane's control room starts modules (``python -m <entry> --ip=.. --port=..``).
``CB|{"target": t, "cmd": c, ...}`` writes the callback ``t|c|{rest}`` on the current connection,
as bsdlab modules do; ``MARK|{"file": f}`` appends a line to a file (Dareplane commands have no reply).
"""

import argparse
import json

from dareplane_utils.default_server.server import DefaultServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ip", default="127.0.0.1")
    args, _ = ap.parse_known_args()
    server: DefaultServer | None = None

    def cb(target: str, cmd: str, **payload: object) -> int:
        assert server is not None
        assert server.current_conn is not None
        server.current_conn.sendall(f"{target}|{cmd}|{json.dumps(payload)}".encode())
        return 0

    def mark(file: str, text: str = "mark") -> int:
        with open(file, "a") as f:
            f.write(text + "\n")
        return 0

    server = DefaultServer(
        args.port, ip=args.ip, pcommand_map={"CB": cb, "MARK": mark}, name="dp_module"
    )
    server.init_server()
    print(f"dp_module listening on {args.port}", flush=True)
    server.start_listening()


if __name__ == "__main__":
    main()
