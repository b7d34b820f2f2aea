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

function assertNotBuilt(err: unknown, engine: string, method: string): true {
  const e = ConnectError.from(err);
  assert.equal(e.code, Code.Unimplemented);
  assert.match(e.rawMessage, new RegExp(engine));
  assert.ok(e.rawMessage.includes(method), e.rawMessage);
  const details = errorDetails(err);
  assert.equal(details.reason, "NOT_IMPLEMENTED");
  assert.equal(details.domain, "agentd.dev");
  assert.equal(details.metadata.engine, engine);
  return true;
}

test("unary engine RPCs answer UNIMPLEMENTED naming their engine", async () => {
  const client = createAgentdClient({ target: server.target });
  await assert.rejects(client.agents.getSwarm({ id: "x" }), (e) =>
    assertNotBuilt(e, "agents engine", "agentd.v1.AgentService/GetSwarm"),
  );
});

test("the bidirectional Work stream answers UNIMPLEMENTED too", async () => {
  const client = createAgentdClient({ target: server.target });
  async function* messages() {
    yield {};
  }
  await assert.rejects(
    (async () => {
      for await (const _ of client.agents.work(messages())) {
        // no message is expected
      }
    })(),
    (e) => assertNotBuilt(e, "agents engine", "agentd.v1.AgentService/Work"),
  );
});
