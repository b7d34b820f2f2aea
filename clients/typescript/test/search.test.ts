import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createAgentdClient } from "../src/index.js";
import { Metric } from "../src/gen/agentd/v1/memory_pb.js";
import { type RunningServer, startServer } from "./server.js";

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

test("create a collection, upsert points and search with a filter", async () => {
  const client = createAgentdClient({ target: server.target });
  await client.memory.createCollection({ name: "ts-docs", dimensions: 3, metric: Metric.COSINE });
  const rows: [number[], string][] = [
    [[1, 0, 0], "en"],
    [[0.9, 0.1, 0], "fr"],
    [[0, 1, 0], "en"],
  ];
  await client.memory.upsert({
    collection: "ts-docs",
    points: rows.map(([values, lang], i) => ({
      id: `p${i}`,
      data: { case: "vector" as const, value: { values } },
      payload: { lang },
    })),
  });
  const query = { case: "vector" as const, value: { values: [1, 0.05, 0] } };
  const nearest = await client.memory.search({ collection: "ts-docs", query, k: 2 });
  assert.deepEqual(
    nearest.results.map((r) => r.id),
    ["p0", "p1"],
  );
  const filtered = await client.memory.search({
    collection: "ts-docs",
    query,
    k: 2,
    withPayload: true,
    filter: {
      kind: {
        case: "field",
        value: {
          key: "lang",
          condition: { case: "eq", value: { kind: { case: "stringValue", value: "en" } } },
        },
      },
    },
  });
  assert.deepEqual(
    filtered.results.map((r) => r.id),
    ["p0", "p2"],
  );
  assert.ok(filtered.results.every((r) => r.payload?.lang === "en"));
});

test("bulk-load with UpsertStream (client streaming) and read CollectionStats", async () => {
  const client = createAgentdClient({ target: server.target });
  await client.memory.createCollection({ name: "ts-bulk", dimensions: 2, metric: Metric.L2 });
  async function* batches() {
    for (let b = 0; b < 3; b++) {
      yield {
        collection: b === 0 ? "ts-bulk" : "",
        points: Array.from({ length: 100 }, (_, i) => ({
          id: `${b}-${i}`,
          data: { case: "vector" as const, value: { values: [b, i] } },
        })),
      };
    }
  }
  const totals = await client.memory.upsertStream(batches());
  assert.equal(totals.pointsUpserted, 300n);
  assert.equal(totals.batchesCommitted, 3n);
  const query = { case: "vector" as const, value: { values: [1, 42] } };
  const found = await client.memory.search({ collection: "ts-bulk", query, k: 1 });
  assert.deepEqual(
    found.results.map((r) => r.id),
    ["1-42"],
  );
  const stats = await client.memory.collectionStats({ name: "ts-bulk" });
  assert.equal(stats.pointsCount, 300n);
  assert.equal(stats.lastAppliedSequence, 3n);
});
