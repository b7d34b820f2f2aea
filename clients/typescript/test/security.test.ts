/**
 * TLS (with a client certificate) and API keys against the real binary
 * started with --tls-cert/--tls-key/--tls-client-ca and --api-keys-file.
 * Certificates come from scripts/test-certs (openssl).
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Code, ConnectError, createAgentdClient, errorDetails } from "../src/index.js";
import { agentdBinary, freePort } from "./server.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../../..");
let child: ChildProcess;
let target: string;
let ca: Buffer;
let cert: Buffer;
let key: Buffer;
let writer: string;
let reader: string;
let slow: string;

function createKey(keys: string, ...args: string[]): string {
  return execFileSync(agentdBinary(), ["keys", "create", "--keys-file", keys, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  }).trim();
}

function client(apiKey?: string) {
  return createAgentdClient({ target, ca, cert, key, apiKey });
}

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "agentd-ts-tls-"));
  const certs = join(dir, "certs");
  execFileSync(join(root, "scripts/test-certs"), [certs]);
  [ca, cert, key] = ["ca.pem", "client.pem", "client-key.pem"].map((f) => readFileSync(join(certs, f)));
  const keys = join(dir, "keys.toml");
  writer = createKey(keys, "--scope", "write");
  reader = createKey(keys, "--scope", "read");
  slow = createKey(keys, "--scope", "read", "--requests-per-second", "1");
  const port = await freePort();
  // The certificate names localhost and 127.0.0.1.
  target = `localhost:${port}`;
  const log = openSync(join(dir, "agentd.log"), "w");
  child = spawn(
    agentdBinary(),
    [
      "serve", "--listen", `127.0.0.1:${port}`, "--data-dir", join(dir, "data"),
      "--disable", "query,agents", "--metrics-listen", "off", "--shutdown-grace", "1s",
      "--tls-cert", join(certs, "server.pem"), "--tls-key", join(certs, "server-key.pem"),
      "--tls-client-ca", join(certs, "ca.pem"), "--api-keys-file", keys,
    ],
    { cwd: dir, stdio: ["ignore", log, log] },
  );
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      if ((await client().health()) === "SERVING") return;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`TLS server did not start; see ${dir}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  if (child.exitCode === null) {
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    await exited;
  }
});

const put = (k: string) => ({ namespace: "secure", key: k, value: new TextEncoder().encode("v") });

test("calls over mutual TLS with a key", async () => {
  await client(writer).memory.put(put("a"));
  const got = await client(reader).memory.get({ namespace: "secure", key: "a" });
  assert.equal(new TextDecoder().decode(got.entry?.value), "v");
});

test("missing and insufficient keys are reported clearly", async () => {
  await assert.rejects(client().memory.put(put("b")), (err: unknown) => {
    assert.equal(ConnectError.from(err).code, Code.Unauthenticated);
    const details = errorDetails(err);
    assert.equal(details.reason, "UNAUTHENTICATED");
    assert.ok(details.isAuthError);
    assert.match(ConnectError.from(err).rawMessage, /authorization: Bearer/);
    return true;
  });
  await assert.rejects(client(reader).memory.put(put("b")), (err: unknown) => {
    assert.equal(ConnectError.from(err).code, Code.PermissionDenied);
    assert.equal(errorDetails(err).reason, "PERMISSION_DENIED");
    assert.match(ConnectError.from(err).rawMessage, /needs write/);
    return true;
  });
});

test("a rate-limited key is told when to retry", async () => {
  const c = client(slow);
  await c.embedding.listModels({});
  let delay = 0;
  await assert.rejects(c.embedding.listModels({}), (err: unknown) => {
    assert.equal(ConnectError.from(err).code, Code.ResourceExhausted);
    const details = errorDetails(err);
    assert.equal(details.reason, "RATE_LIMITED");
    assert.ok(!details.isAuthError);
    delay = details.retryDelayMs ?? 0;
    assert.ok(delay > 0 && delay <= 1000, String(delay));
    return true;
  });
  await new Promise((r) => setTimeout(r, delay + 50));
  await c.embedding.listModels({});
});

test("TLS without a client certificate is refused", async () => {
  const noCert = createAgentdClient({ target, ca, apiKey: writer });
  await assert.rejects(noCert.memory.put(put("c"), { timeoutMs: 5000 }));
  assert.throws(() => createAgentdClient({ target, cert }), /go together/);
});
