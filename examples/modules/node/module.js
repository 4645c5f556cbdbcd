#!/usr/bin/env node
// A mesh module in Node.js with no dependencies (only `net` and `crypto`): docs/protocol.md.
//
//   node module.js --port 8108 [--name node_echo] [--ip 127.0.0.1]
//   python -m shared_utils.conformance 127.0.0.1:8108
//
// Your own commands go in COMMANDS below: a doc line, the arguments (they become HELP's schema
// and are checked before `run` is called) and `run(kwargs)`, which returns the result or throws.
//
// Token: with $MESH_TOKEN set, every connection must send AUTH|{"token": "..."} first and only
// the right token is accepted (compared in constant time). Without a token the module binds
// loopback only and AUTH answers true because nothing is locked. Never answer AUTH with success
// without comparing the token.
'use strict';

const crypto = require('node:crypto');
const net = require('node:net');
const { parseArgs } = require('node:util');
const { MeshLog } = require('./mesh_log');

const COMMANDS = {
  ECHO: {
    doc: 'Return the arguments it was given.',
    args: [],
    extra: true, // accepts any arguments
    run: (kwargs) => kwargs,
  },
  ADD: {
    doc: 'Add two numbers.',
    args: [
      { name: 'a', type: 'float', required: true, default: null },
      { name: 'b', type: 'float', required: false, default: 0 },
    ],
    run: ({ a, b = 0 }) => a + b,
  },
};

const MAX_LINE = 1024 * 1024; // the protocol's limit: longer commands are refused
const AUTH_MAX_FAILURES = 3; // then the connection is closed
const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '8108' },
    ip: { type: 'string', default: '127.0.0.1' },
    name: { type: 'string', default: 'node_module' },
  },
});
const NAME = opts.name;
const TOKEN = process.env.MESH_TOKEN || null;
const log = new MeshLog(NAME);
const started = Date.now();
const clients = new Set();

class CommandError extends Error {}

// -- built-ins: what every module answers besides its own commands -----------------------------
const BUILTINS = {
  STOP: { doc: 'Stop running tasks (this module runs none).', run: () => ({ stopped_tasks: [] }) },
  CLOSE: {
    doc: 'Reply, then exit the process cleanly.',
    run: () => ({ closing: NAME, stopped_tasks: [] }),
    after: () => shutdown('CLOSE'),
  },
  GET_PCOMMS: { doc: 'Names of all commands.', run: () => Object.keys(ALL) },
  UP: { doc: 'Health check: true while the server answers.', run: () => true },
  HELP: {
    doc: 'Each command with its arguments and first doc line.',
    args: [{ name: 'command', type: 'str', required: false, default: null }],
    run: ({ command }) => {
      const entries = Object.entries(ALL).map(([name, c]) => ({
        name,
        doc: c.doc,
        kwargs: c.args || [],
        accepts_extra: Boolean(c.extra),
      }));
      if (command === undefined || command === null) return { module: NAME, commands: entries };
      const found = entries.find((e) => e.name === resolve(String(command)));
      if (!found) throw new CommandError(unknownCommand(String(command)));
      return found;
    },
  },
  STATUS: {
    doc: 'Module name, version, pid, uptime, tasks, connections.',
    run: () => ({
      module: NAME,
      version: '0.1.0',
      pid: process.pid,
      uptime_s: (Date.now() - started) / 1000,
      tasks: [],
      connections: clients.size,
    }),
  },
  AUTH: {
    doc: "Authenticate this connection with the module's token (MESH_TOKEN).",
    args: [{ name: 'token', type: 'str', required: true, default: null }],
    run: ({ token }, conn) => authenticate(conn, token),
  },
  SUBSCRIBE: {
    doc: 'Receive event lines (this module sends none).',
    args: [{ name: 'enable', type: 'bool', required: false, default: true }],
    run: ({ enable = true }) => Boolean(enable),
  },
};
const ALL = { ...COMMANDS, ...BUILTINS };

function resolve(name) {
  if (ALL[name]) return name;
  const matches = Object.keys(ALL).filter((n) => n.toLowerCase() === name.toLowerCase());
  return matches.length === 1 ? matches[0] : null;
}

function unknownCommand(name) {
  return `unknown command '${name.slice(0, 100)}'. Valid commands: ${Object.keys(ALL).join(', ')}`;
}

function sameSecret(a, b) {
  // Hash both so the lengths match; timingSafeEqual then takes the same time wherever they differ.
  const digest = (s) => crypto.createHash('sha256').update(s, 'utf8').digest();
  return crypto.timingSafeEqual(digest(a), digest(b));
}

function authenticate(conn, token) {
  if (TOKEN === null) return true; // no token: nothing is locked
  if (sameSecret(token, TOKEN)) {
    conn.authed = true;
    conn.authFailures = 0;
    return true;
  }
  conn.authFailures += 1;
  log.warning('wrong AUTH token', { peer: conn.peer, failures: conn.authFailures }); // never the token
  if (conn.authFailures >= AUTH_MAX_FAILURES) {
    conn.closeAfterReply = true;
    throw new CommandError('AUTH: wrong token; connection closed after 3 failures');
  }
  throw new CommandError('AUTH: wrong token');
}

const TYPES = { str: 'string', int: 'number', float: 'number', bool: 'boolean' };

function checkArgs(name, spec, kwargs) {
  const known = new Map((spec.args || []).map((a) => [a.name, a]));
  for (const [key, value] of Object.entries(kwargs)) {
    const arg = known.get(key);
    if (!arg && !spec.extra) {
      const valid = [...known.keys()].join(', ') || 'none';
      throw new CommandError(`${name}: unknown argument '${key}'; valid arguments: ${valid}`);
    }
    const wrongType = arg && value !== null && TYPES[arg.type] && typeof value !== TYPES[arg.type];
    if (wrongType || (arg?.type === 'int' && typeof value === 'number' && !Number.isInteger(value))) {
      throw new CommandError(`${name}: argument '${key}' must be ${arg.type}, got ${JSON.stringify(value)}`);
    }
  }
  for (const arg of known.values()) {
    if (arg.required && !(arg.name in kwargs)) {
      throw new CommandError(`${name}: missing required argument ${arg.name}`);
    }
  }
}

// -- one command line -> one reply --------------------------------------------------------------
function parse(line) {
  if (line.startsWith('{')) {
    let req;
    try {
      req = JSON.parse(line);
    } catch (err) {
      throw new CommandError(`request is not valid JSON (${err.message}); send {"cmd": "UP", "id": 1}`);
    }
    if (req === null || typeof req !== 'object' || Array.isArray(req)) {
      throw new CommandError('a JSON request must be an object {"cmd": ..., "kwargs": ..., "id": ...}');
    }
    const meta = 'id' in req ? { id: req.id } : {};
    if (typeof req.cmd !== 'string' || !req.cmd.trim()) {
      throw Object.assign(new CommandError("a JSON request needs a non-empty string 'cmd'"), meta);
    }
    const kwargs = req.kwargs ?? {};
    if (typeof kwargs !== 'object' || Array.isArray(kwargs)) {
      throw Object.assign(new CommandError("'kwargs' must be a JSON object"), meta, { cmd: req.cmd });
    }
    return { cmd: req.cmd.trim(), kwargs, ...meta };
  }
  const bar = line.indexOf('|');
  const cmd = (bar < 0 ? line : line.slice(0, bar)).trim();
  const payload = bar < 0 ? '' : line.slice(bar + 1).trim();
  if (!payload) return { cmd, kwargs: {} };
  let kwargs;
  try {
    kwargs = JSON.parse(payload);
  } catch {
    throw Object.assign(
      new CommandError(`payload of ${cmd} is not valid JSON; send CMD|{"key": value} with double-quoted keys`),
      { cmd },
    );
  }
  if (kwargs === null || typeof kwargs !== 'object' || Array.isArray(kwargs)) {
    const kind = Array.isArray(kwargs) ? 'list' : kwargs === null ? 'null' : typeof kwargs;
    throw Object.assign(
      new CommandError(`payload of ${cmd} must be a JSON object, got ${kind}; send CMD|{"key": value}`),
      { cmd },
    );
  }
  return { cmd, kwargs };
}

// Returns [reply object, command spec or null] for one command line.
function execute(conn, line) {
  let req = { cmd: '?' };
  try {
    req = parse(line);
    const name = resolve(req.cmd);
    if (!name) throw new CommandError(unknownCommand(req.cmd));
    req.cmd = name;
    if (TOKEN !== null && !conn.authed && name !== 'AUTH') {
      throw new CommandError('authentication required: send AUTH|{"token": "..."} first');
    }
    const spec = ALL[name];
    checkArgs(name, spec, req.kwargs);
    const result = spec.run(req.kwargs, conn);
    return [{ ok: true, cmd: name, ...withId(req), result }, spec];
  } catch (err) {
    const cmd = err.cmd || req.cmd || '?';
    const id = 'id' in err ? { id: err.id } : withId(req);
    const error = err instanceof CommandError ? err.message : `${cmd} raised ${err.name}: ${err.message}`;
    log.warning('bad request', { error });
    return [{ ok: false, cmd, ...id, error }, null];
  }
}

function withId(req) {
  return 'id' in req ? { id: req.id } : {};
}

// -- framing: bytes -> commands, one connection at a time --------------------------------------
const utf8 = new TextDecoder('utf-8', { fatal: true });

function handleCommand(conn, bytes) {
  let line;
  try {
    line = utf8.decode(bytes).trim();
  } catch {
    const error = 'command is not valid UTF-8; send UTF-8 text';
    log.warning('bad request', { error });
    if (conn.mode === 'newline') send(conn, { ok: false, cmd: '?', error });
    return;
  }
  if (!line) return;
  const [reply, spec] = execute(conn, line);
  if (conn.mode === 'semicolon') {
    // dareplane-utils' replies: UP -> 1, GET_PCOMMS -> A|B|..., nothing else (errors are logged)
    if (reply.ok && reply.cmd === 'UP') conn.socket.write('1');
    if (reply.ok && reply.cmd === 'GET_PCOMMS') conn.socket.write(reply.result.join('|'));
  } else {
    send(conn, reply);
  }
  if (conn.closeAfterReply) conn.socket.end();
  if (spec && spec.after) spec.after();
}

function send(conn, reply) {
  conn.socket.write(`${JSON.stringify(reply)}\n`);
}

function feed(conn, data) {
  let start = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    let end = false;
    if (b === 0x0a) end = true; // \n always ends a command
    else if (conn.escape) conn.escape = false;
    else if (b === 0x3b && !conn.inString) end = true; // ; unless inside a JSON string
    else if (b === 0x22) conn.inString = !conn.inString;
    else if (b === 0x5c && conn.inString) conn.escape = true;
    if (!end) continue;
    conn.mode ??= b === 0x0a ? 'newline' : 'semicolon';
    const bytes = Buffer.concat([...conn.parts, data.subarray(start, i)]).filter((c) => c !== 0x0d);
    conn.parts = [];
    conn.size = 0;
    conn.inString = false;
    conn.escape = false;
    start = i + 1;
    handleCommand(conn, bytes);
    if (conn.closeAfterReply || conn.socket.destroyed) return;
  }
  const rest = data.subarray(start);
  conn.parts.push(rest);
  conn.size += rest.length;
  if (conn.size > MAX_LINE) {
    if (conn.mode !== 'semicolon') {
      send(conn, { ok: false, cmd: '?', error: `command longer than ${MAX_LINE} bytes; connection closed` });
    }
    log.warning('line too long, closing connection', { peer: conn.peer });
    conn.parts = [];
    conn.socket.end();
    conn.socket.on('data', () => {}); // drain what is still coming until the peer closes
    conn.closeAfterReply = true;
  }
}

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  const conn = {
    socket,
    peer: `${socket.remoteAddress}:${socket.remotePort}`,
    parts: [],
    size: 0,
    inString: false,
    escape: false,
    mode: null,
    authed: TOKEN === null,
    authFailures: 0,
    closeAfterReply: false,
  };
  clients.add(conn);
  socket.on('data', (data) => {
    if (!conn.closeAfterReply) feed(conn, data);
  });
  socket.on('error', () => socket.destroy());
  socket.on('close', () => clients.delete(conn));
});

let closing = false;
function shutdown(why) {
  if (closing) return;
  closing = true;
  server.close();
  log.info('closed', { why });
  const ended = [...clients].map((c) => new Promise((done) => c.socket.end(done)));
  const flushed = Promise.all([...ended, log.close()]); // replies and log records sent
  Promise.race([flushed, new Promise((done) => setTimeout(done, 1000))]).then(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

const isLoopback = (ip) => ip.startsWith('127.') || ip === '::1' || ip === 'localhost';
if (!isLoopback(opts.ip) && TOKEN === null) {
  console.error(`${NAME}: binding ${opts.ip} needs a token: set MESH_TOKEN (clients then send AUTH first)`);
  process.exit(2);
}
server.on('error', (err) => {
  console.error(`${NAME}: cannot listen on ${opts.ip}:${opts.port}: ${err.message}`);
  process.exit(2);
});
server.listen(Number(opts.port), opts.ip, () => {
  log.info('listening', { ip: opts.ip, port: server.address().port, token: TOKEN !== null });
});
