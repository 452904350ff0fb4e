// The agent's HTTP endpoints (node:http): /metrics in Prometheus' text format, /healthz (the
// agent makes progress) and /readyz (the node can serve ADD, as CNI STATUS says, checked with the
// agent's image's tools, not the host's that the CNI binary runs: README "The agent").
import { createServer, type Server } from "node:http";
import { isIP } from "node:net";

export interface Endpoints {
  metrics(): Promise<{ contentType: string; body: string }>;
  /** Undefined: healthy; otherwise why not. */
  unhealthy(): string | undefined;
  /** Undefined: ready; otherwise why not (STATUS's message). */
  notReady(): string | undefined;
}

/**
 * `ADDR:PORT`, `[ADDR]:PORT` (either family: the DaemonSet's `[$(NODE_IP)]:9743` serves IPv4- and
 * IPv6-primary nodes alike) or `:PORT` (every address). A bare IPv6 address with a port is refused:
 * where its port starts is ambiguous.
 */
export function parseListen(listen: string): { host?: string; port: number } {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen);
  const port = Number(m?.[3]);
  const bracketed = m?.[1];
  if (!m || port < 1 || port > 65535 || (bracketed !== undefined && isIP(bracketed) === 0)) {
    throw new Error(`--listen ${JSON.stringify(listen)}: expected ADDR:PORT, [ADDR]:PORT (IPv4 or IPv6) or :PORT`);
  }
  const host = bracketed ?? m[2];
  return { ...(host ? { host } : {}), port };
}

export function serve(listen: string, endpoints: Endpoints): Promise<Server> {
  const { host, port } = parseListen(listen);
  const server = createServer((req, res) => {
    const reply = (code: number, body: string, contentType = "text/plain; charset=utf-8") => {
      res.writeHead(code, { "Content-Type": contentType });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return reply(405, "GET only\n");
    const path = (req.url ?? "/").split("?")[0];
    try {
      switch (path) {
        case "/metrics":
          return void endpoints.metrics().then(({ contentType, body }) => reply(200, body, contentType), (err: Error) => reply(500, `${err.message}\n`));
        case "/healthz": {
          const why = endpoints.unhealthy();
          return reply(why ? 503 : 200, `${why ?? "ok"}\n`);
        }
        case "/readyz": {
          const why = endpoints.notReady();
          return reply(why ? 503 : 200, `${why ?? "ok"}\n`);
        }
        default:
          return reply(404, "not found: /metrics, /healthz, /readyz\n");
      }
    } catch (err) {
      return reply(500, `${(err as Error).message}\n`);
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, ...(host ? { host } : {}) }, () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}
