// The lab's stand-in for Cloudflare's edge: serves a Worker module over HTTPS, turning each
// request into a fetch Request for the module's default export, as the Workers runtime does.
//   node lab/worker_host.mjs WORKER.mjs CERT.pem KEY.pem HOST PORT
import { createServer } from "node:https";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [script, cert, key, host, port] = process.argv.slice(2);
const worker = (await import(pathToFileURL(script).href)).default;

createServer({ cert: readFileSync(cert), key: readFileSync(key) }, async (req, res) => {
  try {
    const response = await worker.fetch(new Request(`https://${req.headers.host}${req.url}`, { method: req.method }));
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  } catch (err) {
    res.writeHead(500);
    res.end(String(err));
  }
}).listen(Number(port), host, () => console.log(`listening on ${host}:${port}`));
