#!/usr/bin/env node
// The smallest module: only what the conformance check requires (docs/writing-a-module.md).
// One JSON reply line per command, in order; a bad command gets an error and the connection
// stays open; UP and GET_PCOMMS; any number of connections. Node.js 18+, no packages.
//
//   node minimal.js --port 8108
//   python -m shared_utils.conformance 127.0.0.1:8108   (passes, warns about the recommended rules)
'use strict';
const net = require('node:net');
const { parseArgs } = require('node:util');

const COMMANDS = {
  ECHO: (kwargs) => kwargs, // yours go here: NAME: (kwargs) => result, or throw an Error
  UP: () => true,
  GET_PCOMMS: () => Object.keys(COMMANDS),
};

function reply(line) {
  let req = {};
  let name = line.split('|', 1)[0];
  let out;
  try {
    let kwargs = {};
    if (line.startsWith('{')) { // a JSON request: {"id": 7, "cmd": "NAME", "kwargs": {...}}
      req = JSON.parse(line);
      [name, kwargs] = [req.cmd, req.kwargs ?? {}];
    } else if (line.includes('|')) { // NAME|{json object}
      kwargs = JSON.parse(line.slice(line.indexOf('|') + 1));
    }
    if (typeof name !== 'string') throw new Error('"cmd" must be a string');
    if (typeof kwargs !== 'object' || kwargs === null || Array.isArray(kwargs)) {
      throw new Error('the arguments must be a JSON object');
    }
    name = name.trim();
    if (!Object.hasOwn(COMMANDS, name)) {
      throw new Error(`unknown command '${name}'. Valid commands: ${Object.keys(COMMANDS).join(', ')}`);
    }
    out = { ok: true, cmd: name, result: COMMANDS[name](kwargs) };
  } catch (err) { // unknown command, bad JSON, wrong arguments: an error, and go on
    out = { ok: false, cmd: String(name).slice(0, 100), error: err.message };
  }
  if ('id' in req) out.id = req.id;
  return out;
}

const { values } = parseArgs({ options: { port: { type: 'string' }, name: { type: 'string' } } });
net.createServer((conn) => {
  let buf = Buffer.alloc(0); // bytes: a command may arrive in pieces, several in one read
  conn.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10)) {
      const line = buf.subarray(0, nl).toString('utf8').trim(); // drops \r too
      buf = buf.subarray(nl + 1);
      if (line) conn.write(`${JSON.stringify(reply(line))}\n`);
    }
  });
  conn.on('error', () => {}); // a client that left: nothing to do
}).listen(Number(values.port ?? 8108), '127.0.0.1');
