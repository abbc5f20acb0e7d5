#!/usr/bin/env node
// Sends HL7 v2 message files over MLLP with simple-hl7's TCP client, one
// connection (keepalive), one message at a time, and prints one JSON line
// per ACK: {"file", "msa1", "msa2", "msa3", "err": [ERR-3.1 codes]}.
// Usage: node send.js HOST PORT FILE...
'use strict';
const fs = require('fs');
const hl7 = require('simple-hl7');

const [host, port, ...files] = process.argv.slice(2);
if (!host || !port || files.length === 0) {
  console.error('usage: node send.js HOST PORT FILE...');
  process.exit(2);
}
const parser = new hl7.Parser({ segmentSeperator: '\r' });
const client = hl7.Server.createTcpClient({ host, port: Number(port), keepalive: true });

function field(ack, seg, n) {
  const s = ack.getSegment(seg);
  return s ? s.getField(n) : '';
}

(async () => {
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8').replace(/\r?\n/g, '\r').replace(/\r+$/, '');
    const msg = parser.parse(text);
    const ack = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no ACK within 30 s')), 30000);
      client.send(msg, (err, ack) => { clearTimeout(timer); err ? reject(err) : resolve(ack); });
    });
    const errs = ack.getSegments('ERR').map((s) => String(s.getComponent(3, 1)));
    console.log(JSON.stringify({ file, msa1: field(ack, 'MSA', 1), msa2: field(ack, 'MSA', 2), msa3: field(ack, 'MSA', 3), err: errs }));
  }
  client.close();
})().catch((e) => { console.error(e.message); client.close(); process.exit(1); });
