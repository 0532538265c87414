// The seed's server in JavaScript, on WASI 0.2 sockets directly (no
// JavaScript runtime for WebAssembly offers a socket API of its own): one
// wasi:io/poll over the listener and every connection.
//
// It listens on LISTEN_ADDR (the address the host grants it), answers
// every read of up to 2048 bytes with `javascript socket server : N` (N
// random in 0..100, one reply per line), serves many clients at once, and
// logs each connect, payload and disconnect.
//
// Build: see the guide (docs/guests.md, "Guests in other languages"): with
// componentize-qjs (QuickJS), whose bindings take a u64 as a Number.
// ComponentizeJS 0.23.0 builds it too, but the component traps at its
// first sockets call (ComponentizeJS issue #221).
import * as environment from 'wasi:cli/environment@0.2.12';
import * as stdout from 'wasi:cli/stdout@0.2.12';
import * as poll from 'wasi:io/poll@0.2.12';
import * as random from 'wasi:random/random@0.2.12';
import * as instanceNetwork from 'wasi:sockets/instance-network@0.2.12';
import * as tcpCreateSocket from 'wasi:sockets/tcp-create-socket@0.2.12';

// UTF-8 by hand: QuickJS has no TextEncoder or TextDecoder.
function encode(text) {
  const bytes = [];
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(bytes);
}

// Bytes a client sent, as text for the log: anything that is not UTF-8
// becomes U+FFFD, never an error.
function decode(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; ) {
    const x = bytes[i++];
    const extra = x < 0x80 ? 0 : x >= 0xc2 && x < 0xe0 ? 1 : x >= 0xe0 && x < 0xf0 ? 2 : x >= 0xf0 && x < 0xf5 ? 3 : -1;
    let c = extra === 0 ? x : x & (0x3f >> extra);
    let ok = extra >= 0;
    for (let k = 0; ok && k < extra; k++) {
      const y = bytes[i];
      if (y === undefined || (y & 0xc0) !== 0x80) ok = false;
      else {
        c = (c << 6) | (y & 63);
        i++;
      }
    }
    const min = [0, 0x80, 0x800, 0x10000][extra];
    text += ok && c >= min && c <= 0x10ffff && (c < 0xd800 || c > 0xdfff) ? String.fromCodePoint(c) : '\ufffd';
  }
  return text;
}

// A random number in 0..100, unbiased: bytes of 200 and up are drawn again.
function random100() {
  for (;;) {
    const byte = random.getRandomBytes(1)[0];
    if (byte < 200) return byte % 100;
  }
}

// The error code a WASI call threw (bindings differ in how they wrap it).
function errorCode(e) {
  const payload = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
  return typeof payload === 'string' ? payload : payload && payload.tag;
}

// Drops a resource now (its children first: WASI requires that order).
function dispose(resource) {
  const drop = (Symbol.dispose && resource[Symbol.dispose]) || resource[Symbol.for('dispose')];
  if (drop) drop.call(resource);
}

let out; // taken at run time, not while the component is being built
function log(line) {
  out ??= stdout.getStdout();
  out.blockingWriteAndFlush(encode(line + '\n'));
}

function parseAddr(text) {
  const colon = text.lastIndexOf(':');
  const port = Number(text.slice(colon + 1));
  const address = text.slice(0, colon).split('.').map(Number);
  return { tag: 'ipv4', val: { port, address } };
}

function describe(addr) {
  return addr.tag === 'ipv4' ? `${addr.val.address.join('.')}:${addr.val.port}` : `[ipv6]:${addr.val.port}`;
}

// Finishes a start-/finish- pair, waiting while it would block.
function finish(pollable, call) {
  for (;;) {
    try {
      return call();
    } catch (e) {
      if (errorCode(e) !== 'would-block') throw e;
      pollable.block();
    }
  }
}

export const run = {
  run() {
    const listenAddr = (environment.getEnvironment().find(([k]) => k === 'LISTEN_ADDR') || [])[1];
    const network = instanceNetwork.instanceNetwork();
    const listener = tcpCreateSocket.createTcpSocket('ipv4');
    const ready = listener.subscribe();
    listener.startBind(network, parseAddr(listenAddr));
    finish(ready, () => listener.finishBind());
    listener.startListen();
    finish(ready, () => listener.finishListen());
    log(`listening on ${listenAddr}`);

    const clients = []; // { socket, input, output, readable, peer }
    const close = (client) => {
      log(`${client.peer}: disconnected`);
      clients.splice(clients.indexOf(client), 1);
      dispose(client.readable);
      dispose(client.input);
      dispose(client.output);
      dispose(client.socket);
    };
    for (;;) {
      const woken = [...poll.poll([ready, ...clients.map((c) => c.readable)])];
      const readable = woken.filter((i) => i > 0).map((i) => clients[i - 1]);
      for (const client of readable) {
        let bytes;
        try {
          bytes = client.input.read(2048);
        } catch (e) {
          close(client); // the end of the stream, or a failure
          continue;
        }
        if (bytes.length === 0) continue;
        log(`${client.peer}: ${decode(bytes).trimEnd()}`);
        try {
          client.output.blockingWriteAndFlush(encode(`javascript socket server : ${random100()}\n`));
        } catch (e) {
          close(client);
        }
      }
      if (woken.includes(0)) {
        // Readable: a client waits (the host's readiness is exact).
        for (;;) {
          let accepted;
          try {
            accepted = listener.accept();
          } catch (e) {
            break;
          }
          const [socket, input, output] = accepted;
          let peer = '?';
          try {
            peer = describe(socket.remoteAddress());
          } catch (e) {}
          log(`${peer}: connected`);
          clients.push({ socket, input, output, readable: input.subscribe(), peer });
        }
      }
    }
  },
};
