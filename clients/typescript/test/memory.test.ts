import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Code, ConnectError, createAgentdClient, errorDetails } from "../src/index.js";
import { type RunningServer, startServer } from "./server.js";

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

const text = new TextEncoder();
const decode = new TextDecoder();

test("put, get, list and delete key-value memory", async () => {
  const client = createAgentdClient({ target: server.target });
  const stored = await client.memory.put({
    namespace: "ts",
    key: "fact/1",
    value: text.encode("the sky is blue"),
    metadata: { source: "node" },
  });
  assert.equal(stored.entry?.version, 1n);
  const got = await client.memory.get({ namespace: "ts", key: "fact/1" });
  assert.equal(decode.decode(got.entry?.value), "the sky is blue");
  assert.deepEqual(got.entry?.metadata, { source: "node" });
  await client.memory.put({ namespace: "ts", key: "fact/2", value: text.encode("water is wet") });
  const listed = await client.memory.list({ namespace: "ts", prefix: "fact/" });
  assert.deepEqual(
    listed.entries.map((e) => e.key),
    ["fact/1", "fact/2"],
  );
  assert.equal((await client.memory.delete({ namespace: "ts", key: "fact/1" })).deleted, true);
  await assert.rejects(client.memory.get({ namespace: "ts", key: "fact/1" }), (err: unknown) => {
    assert.equal(ConnectError.from(err).code, Code.NotFound);
    return true;
  });
});

test("a compare-and-set conflict is ABORTED with VERSION_CONFLICT", async () => {
  const client = createAgentdClient({ target: server.target });
  await client.memory.put({ namespace: "ts", key: "cas", value: text.encode("1"), ifVersion: 0n });
  await assert.rejects(
    client.memory.put({ namespace: "ts", key: "cas", value: text.encode("2"), ifVersion: 0n }),
    (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.Aborted);
      assert.equal(errorDetails(err).reason, "VERSION_CONFLICT");
      return true;
    },
  );
});
