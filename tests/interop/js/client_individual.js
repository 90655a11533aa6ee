'use strict';
/*
 * stompit over TCP against a STOMP broker:
 *
 *     node client_individual.js HOST PORT [COUNT [ack|nack-first]]
 *
 * Connects (guest/guest, STOMP 1.0-1.2 offered), subscribes to /queue/interop-js with
 * ack:client-individual, sends COUNT messages (UTF-8 bodies, header x-seq, receipt for each),
 * acknowledges every delivery with a receipt and disconnects once all COUNT are acknowledged.
 * In nack-first mode the first delivery of message 0 is NACKed instead, so the broker must
 * deliver it again before the run can finish.
 *
 * Prints one JSON object on stdout: {version, sent, receipts, deliveries, acked}. Any error,
 * ERROR frame or a run longer than TIMEOUT_MS exits 2 with the reason on stderr.
 */
const stompit = require('stompit');

const TIMEOUT_MS = 20000;
const DESTINATION = '/queue/interop-js';

const [host, portText, countText = '5', mode = 'ack'] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);

function fail(error) {
  const detail = error && error.longMessage ? `\n${error.longMessage}` : '';
  process.stderr.write(`${error && error.stack ? error.stack : error}${detail}\n`);
  process.exit(2);
}

if (!host || !Number.isInteger(port) || !Number.isInteger(count) || count < 1 ||
    !['ack', 'nack-first'].includes(mode)) {
  fail('usage: node client_individual.js HOST PORT [COUNT [ack|nack-first]]');
}

const result = {version: null, sent: [], receipts: [], deliveries: [], acked: []};

const timer = setTimeout(() => fail(new Error(`timed out after ${TIMEOUT_MS} ms: ${JSON.stringify(result)}`)),
  TIMEOUT_MS);

const connectOptions = {
  host,
  port,
  connectHeaders: {host: 'localhost', login: 'guest', passcode: 'guest', 'heart-beat': '0,0'},
};

stompit.connect(connectOptions, (connectError, client) => {
  if (connectError) {
    fail(connectError);
    return;
  }
  client.on('error', fail);
  result.version = client.headers.version || null;

  let nacked = false;
  let finished = false;

  const finish = () => {
    finished = true;
    client.disconnect((disconnectError) => {
      if (disconnectError) {
        fail(disconnectError);
        return;
      }
      clearTimeout(timer);
      process.stdout.write(`${JSON.stringify(result)}\n`);
    });
  };

  client.subscribe({destination: DESTINATION, ack: 'client-individual'}, (subscribeError, message) => {
    if (subscribeError) {
      fail(subscribeError);
      return;
    }
    message.readString('utf-8', (readError, body) => {
      if (readError) {
        fail(readError);
        return;
      }
      const headers = message.headers;
      const seq = headers['x-seq'];
      result.deliveries.push({
        body,
        seq: seq === undefined ? null : seq,
        destination: headers.destination === undefined ? null : headers.destination,
        redelivered: headers.redelivered === undefined ? null : headers.redelivered,
        contentLength: headers['content-length'] === undefined ? null : String(headers['content-length']),
        contentType: headers['content-type'] === undefined ? null : headers['content-type'],
        ack: headers.ack === undefined ? null : headers.ack,
      });
      if (mode === 'nack-first' && seq === '0' && !nacked) {
        nacked = true;
        client.nack(message);
        return;
      }
      client.ack(message, {}, {
        onReceipt: () => {
          result.acked.push(seq);
          if (!finished && result.acked.length === count) {
            finish();
          }
        },
      });
    });
  });

  for (let i = 0; i < count; i++) {
    const body = `message ${i} from stompit: héllo ✓`;
    result.sent.push(body);
    const frame = client.send({
      destination: DESTINATION,
      'x-seq': String(i),
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body, 'utf-8'),
    }, {
      onReceipt: () => result.receipts.push(String(i)),
    });
    frame.write(body);
    frame.end();
  }
});
