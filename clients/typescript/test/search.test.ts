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
