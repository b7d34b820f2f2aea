import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Code, ConnectError, createAgentdClient } from "../src/index.js";
import { CacheMode, QueryState, Role } from "../src/gen/agentd/v1/query_pb.js";
import { type Command, commandQueue } from "./commands.js";
import { type RunningServer, startServer } from "./server.js";

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

function start(model: string, maxTokens = 40): Command {
  return {
    command: {
      case: "start",
      value: {
        model,
        messages: [{ role: Role.USER, content: "Tell me about the sea." }],
        params: { maxTokens, temperature: 0 },
        cache: { mode: CacheMode.OFF },
      },
    },
  };
}

test("pause, switch model and resume one session", async () => {
  const client = createAgentdClient({ target: server.target });
  const commands = commandQueue();
  commands.push(start("local"));
  const kinds: string[] = [];
  const seqs: bigint[] = [];
  let text = "";
  let pausedAt: bigint | undefined;
  for await (const response of client.query.session(commands)) {
    const kind = response.event?.kind;
    if (!kind?.case) continue;
    kinds.push(kind.case);
    if (kind.case === "delta") {
      assert.ok(pausedAt === undefined || kind.value.seq > pausedAt, "no delta while paused");
      seqs.push(kind.value.seq);
      text += kind.value.text;
      if (kind.value.seq === 4n && pausedAt === undefined) {
        commands.push({ command: { case: "pause", value: {} } });
      }
    } else if (kind.case === "paused") {
      pausedAt = kind.value.seq;
      const info = await client.query.getQuery({ queryId: response.event!.queryId });
      assert.equal(info.query?.state, QueryState.PAUSED);
      commands.push({ command: { case: "switchModel", value: { model: "local-b" } } });
      commands.push({ command: { case: "resume", value: {} } });
    } else if (kind.case === "completed") {
      assert.equal(kind.value.text, text, "the final text is every delta joined");
      // Nothing more to send: close our side so the server ends the stream.
      commands.close();
    }
  }
  commands.close();
  assert.deepEqual(
    seqs,
    seqs.map((_, i) => BigInt(i + 1)),
    "deltas 1, 2, 3, ... with no gaps",
  );
  // The pause lands after delta 4, or later if the model was faster.
  assert.ok(pausedAt !== undefined && pausedAt >= 4n, `paused at ${pausedAt}`);
  assert.equal(kinds[0], "started");
  assert.equal(kinds.at(-1), "completed");
  assert.deepEqual(
    kinds.filter((k) => k === "paused" || k === "modelSwitched" || k === "resumed"),
    ["paused", "modelSwitched", "resumed"],
  );
});

test("unary controls and their errors", async () => {
  const client = createAgentdClient({ target: server.target });
  const models = await client.query.listQueryModels({});
  assert.ok(models.models.some((m) => m.alias === "local-b"));
  await assert.rejects(client.query.pause({ queryId: "no-such-query" }), (e) => {
    assert.equal(ConnectError.from(e).code, Code.NotFound);
    return true;
  });
  const commands = commandQueue();
  commands.push(start("local", 400));
  commands.close();
  const stream = client.query.session(commands)[Symbol.asyncIterator]();
  const first = (await stream.next()).value as { event?: { queryId: string } };
  const queryId = first.event!.queryId;
  for (;;) {
    const r = await stream.next();
    if (r.value?.event?.kind.case === "delta") break;
  }
  const paused = await client.query.pause({ queryId });
  await assert.rejects(client.query.resume({ queryId, model: "no-such-model" }), (e) => {
    assert.equal(ConnectError.from(e).code, Code.NotFound);
    return true;
  });
  const ended = await client.query.terminate({ queryId, reason: "done" });
  assert.equal(ended.seq, paused.seq);
  let last: string | undefined;
  for (;;) {
    const r = await stream.next();
    if (r.done) break;
    last = r.value.event?.kind.case;
  }
  assert.equal(last, "terminated");
});
