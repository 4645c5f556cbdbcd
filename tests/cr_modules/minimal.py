"""A module that meets only the required protocol rules, with the standard library and nothing of
ours: it stands in for a foreign module in control-room tests. Commands: UP, GET_PCOMMS, ECHO. No
HELP, STATUS, STOP, CLOSE, AUTH or SUBSCRIBE, no semicolon mode, no line limit.

    python tests/cr_modules/minimal.py --port P [--bad MODE] [--bad-after FILE]

``--bad`` makes it misbehave the way a broken foreign module does:
``never-up`` (accepts connections, answers nothing), ``garbage`` (answers bytes that are not a
reply), ``flood`` (writes 50 MB to stdout at start, then serves), ``die`` (exits with code 3 at
start). With ``--bad-after FILE`` the first start is healthy (it creates FILE) and every later
one misbehaves: a module that breaks when the supervisor restarts it.
"""

import argparse
import json
import os
import socketserver
import sys

FLOOD_BYTES = 50 * 1024 * 1024


def reply(line: str) -> dict:
    req: dict = {}
    try:
        if line.startswith("{"):
            req = json.loads(line)
            name, kwargs = req["cmd"], req.get("kwargs") or {}
        else:
            name, _, payload = line.partition("|")
            kwargs = json.loads(payload) if payload.strip() else {}
        if not isinstance(name, str) or not isinstance(kwargs, dict):
            raise ValueError("send CMD or CMD|{json object}")
        name = name.strip()
        table = {"UP": lambda: True, "GET_PCOMMS": lambda: ["ECHO", "UP", "GET_PCOMMS"]}
        table["ECHO"] = lambda: kwargs
        if name not in table:
            raise KeyError(f"unknown command {name!r}; valid: ECHO, UP, GET_PCOMMS")
        out = {"ok": True, "cmd": name, "result": table[name]()}
    except Exception as exc:  # every bad command gets an error, the connection goes on
        out = {"ok": False, "cmd": line.split("|")[0][:40], "error": f"{type(exc).__name__}: {exc}"}
    if isinstance(req, dict) and "id" in req:
        out["id"] = req["id"]
    return out


class Handler(socketserver.StreamRequestHandler):
    bad = ""

    def handle(self) -> None:
        for raw in self.rfile:
            if self.bad == "never-up":
                continue
            if self.bad == "garbage":
                self.wfile.write(b"\x00\xffGARBAGE not json\n")
                continue
            line = raw.decode("utf-8", "replace").strip()
            if line:
                try:
                    self.wfile.write(json.dumps(reply(line)).encode() + b"\n")
                except OSError:  # the client left without reading its reply
                    return


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bad", choices=["never-up", "garbage", "flood", "die"], default="")
    p.add_argument("--bad-after", default=None)
    args = p.parse_args()
    bad = args.bad
    if args.bad_after and not os.path.exists(args.bad_after):
        open(args.bad_after, "w").close()
        bad = ""  # the first start is healthy
    if bad == "die":
        print("minimal: cannot open /dev/fake_amplifier (No such device)", file=sys.stderr)
        sys.exit(3)
    if bad == "flood":
        chunk = ("minimal: flood " + "x" * 100 + "\n") * 1000
        for _ in range(FLOOD_BYTES // len(chunk)):
            sys.stdout.write(chunk)
        print("minimal: flood done", flush=True)
    Handler.bad = bad
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", args.port), Handler)
    print(f"minimal: listening on {args.port}{f' ({bad})' if bad else ''}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
