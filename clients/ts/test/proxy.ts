/** A TCP proxy on loopback in front of the server: `cut` drops every connection through it (a network fault). */
import { createServer, connect, type Server, type Socket } from "node:net";

export class TcpProxy {
  private constructor(
    private readonly server: Server,
    readonly address: string,
    private readonly sockets: Set<Socket>,
  ) {}

  /** Listens on a free loopback port and forwards each connection to `target` (`host:port`). */
  static async start(target: string): Promise<TcpProxy> {
    const at = target.lastIndexOf(":");
    const host = target.slice(0, at).replace(/^\[|\]$/g, "");
    const port = Number(target.slice(at + 1));
    const sockets = new Set<Socket>();
    const server = createServer((downstream) => {
      const upstream = connect(port, host);
      for (const s of [downstream, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => {
          downstream.destroy();
          upstream.destroy();
        });
      }
      downstream.pipe(upstream).pipe(downstream);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port: listening } = server.address() as { port: number };
    return new TcpProxy(server, `127.0.0.1:${listening}`, sockets);
  }

  /** Drops every open connection (both sides see a reset); new connections are accepted as before. */
  cut(): void {
    for (const s of this.sockets) {
      s.resetAndDestroy();
    }
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
