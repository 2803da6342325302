// fauxqs (pinned in package.json) bound to 127.0.0.1 for the benchmarks.
//   node bench/fauxqs_server.mjs --port 4566
// Prints "fauxqs listening on http://127.0.0.1:<port>" once it accepts connections; stops on
// SIGTERM/SIGINT. Queue URLs are built from the request's Host header, so clients must use the
// URLs the server returns (get_queue_url / create_queue), never build their own.
import { buildApp } from "fauxqs";

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const port = Number.parseInt(option("port", "4566"), 10);
const app = buildApp({ logger: false });
const address = await app.listen({ port, host: "127.0.0.1" });
console.log(`fauxqs listening on ${address}`);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    app.close().then(() => process.exit(0));
  });
}
