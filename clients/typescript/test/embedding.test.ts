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

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

test("Embed returns normalised all-MiniLM-L6-v2 vectors", async () => {
  const client = createAgentdClient({ target: server.target });
  const answer = await client.embedding.embed({
    inputs: ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."],
  });
  assert.equal(answer.model, "all-MiniLM-L6-v2");
  const v = answer.embeddings.map((e) => e.values);
  assert.ok(v.every((x) => x.length === 384));
  assert.ok(cosine(v[0], v[1]) > 0.6, `${cosine(v[0], v[1])}`);
  assert.ok(cosine(v[0], v[2]) < 0.3, `${cosine(v[0], v[2])}`);
});

test("invalid input names the field", async () => {
  const client = createAgentdClient({ target: server.target });
  await assert.rejects(client.embedding.embed({ inputs: [] }), (err: unknown) => {
    assert.equal(ConnectError.from(err).code, Code.InvalidArgument);
    const details = errorDetails(err);
    assert.equal(details.reason, "INVALID_FIELD");
    assert.equal(details.fieldViolations[0].field, "inputs");
    return true;
  });
});

test("EmbedStream takes and returns async iterables", async () => {
  const client = createAgentdClient({ target: server.target });
  async function* requests() {
    for (let i = 0; i < 10; i++) {
      yield { requestId: `r${i}`, request: { inputs: [`text ${i}`] } };
    }
  }
  const ids: string[] = [];
  for await (const response of client.embedding.embedStream(requests())) {
    assert.equal(response.result.case, "response");
    if (response.result.case === "response") {
      assert.equal(response.result.value.embeddings[0].values.length, 384);
    }
    ids.push(response.requestId);
  }
  assert.deepEqual(ids.sort(), Array.from({ length: 10 }, (_, i) => `r${i}`).sort());
});
