import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Code, ConnectError, SERVICES, createAgentdClient } from "../src/index.js";
import { type RunningServer, startServer } from "./server.js";

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

test("the whole server and each built service are SERVING", async () => {
  const client = createAgentdClient({ target: server.target });
  assert.equal(await client.health(), "SERVING");
  for (const service of SERVICES) {
    assert.equal(await client.health(service), "SERVING", service);
  }
});

test("an unknown service is NOT_FOUND", async () => {
  const client = createAgentdClient({ target: server.target });
  await assert.rejects(client.health("agentd.v1.NoSuchService"), (err: unknown) => {
    assert.equal(ConnectError.from(err).code, Code.NotFound);
    return true;
  });
});

test("gzip requests and an API key header are accepted", async () => {
  const client = createAgentdClient({ target: server.target, gzip: true, apiKey: "secret" });
  assert.equal(await client.health(), "SERVING");
});

test("reflection lists the four services, health and reflection", async () => {
  const client = createAgentdClient({ target: server.target });
  const names = await client.listServices();
  for (const name of [...SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
    assert.ok(names.includes(name), `${name} missing from ${names.join(", ")}`);
  }
});
