// Tiny UDP/TCP echo server and client, run with `ip netns exec <ns> node netprobe.mjs ...`
// (no ping/nc on this machine; node is always there). Replies carry the address the
// server saw, so tests can tell SNAT/DNAT apart.
//   serve <udp|tcp> <port>                      prints "ready" once listening
//   probe <udp|tcp> <host> <port> <count> <timeoutMs> [fresh]
//     prints {"sent":n,"received":n,"replies":[{"from":..,"seenAs":..}],"errors":[..]}
//     "fresh": a new UDP socket (new source port) per datagram, like DNS clients do.
import dgram from 'node:dgram';
import net from 'node:net';

const [mode, proto, ...rest] = process.argv.slice(2);
const unmap = (a) => (a && a.startsWith('::ffff:') ? a.slice(7) : a);

if (mode === 'serve') {
  const port = Number(rest[0]);
  if (proto === 'udp') {
    // One dual-stack socket: v4 peers show up as ::ffff:a.b.c.d, unmapped on reply.
    const s = dgram.createSocket({ type: 'udp6', ipv6Only: false });
    s.on('message', (msg, r) => {
      const reply = JSON.stringify({ seenAs: unmap(r.address), seenPort: r.port, data: msg.toString() });
      s.send(reply, r.port, r.address);
    });
    s.bind(port, '::', () => console.log('ready'));
  } else {
    const srv = net.createServer((c) => {
      c.once('data', (d) => c.end(JSON.stringify({ seenAs: unmap(c.remoteAddress), seenPort: c.remotePort, data: d.toString() })));
      c.on('error', () => {});
    });
    srv.listen({ port, host: '::', ipv6Only: false }, () => console.log('ready'));
  }
} else if (mode === 'probe') {
  const [host, portS, countS, timeoutS, fresh] = rest;
  const port = Number(portS);
  const count = Number(countS ?? 1);
  const timeoutMs = Number(timeoutS ?? 1000);
  const out = { sent: 0, received: 0, replies: [], errors: [] };
  const family = net.isIPv6(host) ? 'udp6' : 'udp4';
  const done = () => {
    console.log(JSON.stringify(out));
    process.exit(0);
  };
  if (proto === 'udp') {
    const seen = new Set();
    const sockets = [];
    const onMsg = (msg, r) => {
      try {
        const body = JSON.parse(msg.toString());
        if (seen.has(body.data)) return; // a duplicate is not a second answer
        seen.add(body.data);
        out.received++;
        out.replies.push({ from: unmap(r.address), seenAs: body.seenAs });
      } catch (e) {
        out.errors.push(String(e));
      }
      if (out.received === count) done();
    };
    const mk = () => {
      const s = dgram.createSocket(family);
      s.on('message', onMsg);
      s.on('error', (e) => out.errors.push(String(e)));
      sockets.push(s);
      return s;
    };
    const shared = fresh ? undefined : mk();
    for (let i = 0; i < count; i++) {
      (shared ?? mk()).send(`probe-${i}`, port, host, (e) => (e ? out.errors.push(String(e)) : out.sent++));
    }
    setTimeout(done, timeoutMs);
  } else {
    let finished = 0;
    for (let i = 0; i < count; i++) {
      out.sent++;
      const c = net.connect({ host, port, timeout: timeoutMs });
      let buf = '';
      let closed = false;
      const end = (err) => {
        if (closed) return; // timeout, error and end can all fire for one connection
        closed = true;
        if (err) out.errors.push(String(err));
        c.destroy();
        if (++finished === count) done();
      };
      c.on('connect', () => c.write(`probe-${i}`));
      c.on('data', (d) => (buf += d));
      c.on('end', () => {
        try {
          const body = JSON.parse(buf);
          out.received++;
          out.replies.push({ from: unmap(c.remoteAddress), seenAs: body.seenAs });
          end();
        } catch (e) {
          end(e);
        }
      });
      c.on('timeout', () => end(new Error('timeout')));
      c.on('error', (e) => end(e));
    }
    setTimeout(done, timeoutMs + 500);
  }
} else {
  console.error('usage: netprobe.mjs serve|probe udp|tcp ...');
  process.exit(2);
}
