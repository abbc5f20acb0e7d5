#!/usr/bin/env node
// A peer for Vigil's MLLP benchmark: simple-hl7's own MLLP TCP server,
// answering every message with its automatic ACK (MSA AA) at once —
// nothing parsed beyond simple-hl7's parser, nothing stored. Prints
// {"port": N} once listening on 127.0.0.1 (port 0: any free port).
// Usage: node peer.js [PORT]
'use strict';
const TcpServer = require('simple-hl7/lib/server/tcp-server.js');

const server = new TcpServer((err, req, res) => {
  if (!err) res.end();
});
server.start(Number(process.argv[2] || 0));
server.server.on('listening', () => {
  console.log(JSON.stringify({ port: server.server.address().port }));
});
process.on('SIGTERM', () => process.exit(0));
