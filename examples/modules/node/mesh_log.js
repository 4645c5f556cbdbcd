// Log records to the mesh's central log receiver (docs/logging.md), with `net` only.
//
// Wire format: a 4-byte big-endian length, then that many bytes of UTF-8 JSON. The address comes
// from $MESH_LOG_SERVER ("host:port", default 127.0.0.1:9020; "none" turns sending off); the
// control room sets it for every module it starts. Logging never blocks or throws: records wait
// in a bounded queue while the receiver is away (it is tried again every 2 s) and the oldest
// are dropped when the queue is full.
'use strict';

const net = require('node:net');

const OFF = new Set(['', 'none', 'off', '0', 'false', 'no', 'disabled']);
const LEVELS = { info: 20, warning: 30, error: 40 };
const MAX_QUEUED = 1000;
const RETRY_MS = 2000;

function receiverAddress(value = process.env.MESH_LOG_SERVER ?? '127.0.0.1:9020') {
  if (OFF.has(value.trim().toLowerCase())) return null;
  const colon = value.lastIndexOf(':');
  const host = colon < 0 ? '127.0.0.1' : value.slice(0, colon).replace(/^\[|\]$/g, '');
  return { host: host || '127.0.0.1', port: Number(value.slice(colon + 1)) };
}

class MeshLog {
  constructor(module) {
    this.module = module;
    this.address = receiverAddress();
    this.console = process.env.MESH_LOG_CONSOLE !== '0';
    this.queue = [];
    this.socket = null;
    this.connected = false;
    this.retryAt = 0;
  }

  info(event, kv = {}) {
    this.record('info', event, kv);
  }

  warning(event, kv = {}) {
    this.record('warning', event, kv);
  }

  error(event, kv = {}) {
    this.record('error', event, kv);
  }

  record(level, event, kv) {
    if (this.console) console.error(`${this.module}: ${event} ${JSON.stringify(kv)}`);
    if (!this.address) return;
    const now = Date.now();
    const body = Buffer.from(
      JSON.stringify({
        mesh: 1,
        time: new Date(now).toISOString().replace('Z', '+00:00'),
        created: now / 1000,
        module: this.module,
        name: this.module,
        level,
        levelname: level.toUpperCase(),
        levelno: LEVELS[level],
        event,
        msg: event,
        args: [],
        kv,
        process: process.pid,
      }),
    );
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    this.queue.push(Buffer.concat([head, body]));
    if (this.queue.length > MAX_QUEUED) this.queue.shift();
    this.flush();
  }

  flush() {
    if (this.connected) {
      for (const frame of this.queue.splice(0)) this.socket.write(frame);
    } else if (!this.socket && Date.now() >= this.retryAt) {
      this.connect();
    }
  }

  connect() {
    const socket = net.createConnection(this.address);
    this.socket = socket;
    socket.unref(); // logging alone never keeps the process alive
    socket.on('connect', () => {
      this.connected = true;
      this.flush();
    });
    socket.on('error', () => {}); // 'close' follows: retry later
    socket.on('close', () => {
      this.socket = null;
      this.connected = false;
      this.retryAt = Date.now() + RETRY_MS;
    });
  }

  // Send what is queued and close; resolves when done (callers bound the wait themselves).
  close() {
    if (!this.socket) return Promise.resolve();
    return new Promise((done) => {
      const finish = () => this.socket?.end(done) ?? done();
      if (this.connected) finish();
      else this.socket.once('connect', finish).once('close', done);
    });
  }
}

module.exports = { MeshLog, receiverAddress };
