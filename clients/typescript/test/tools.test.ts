import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createAgentdClient } from "../src/index.js";
import {
  CacheMode,
  QueryState,
  Role,
  type ToolDefinitionSchema,
} from "../src/gen/agentd/v1/query_pb.js";
import { commandQueue } from "./commands.js";
import { type RunningServer, startServer } from "./server.js";

/** A tool loop from TypeScript against the real binary: the model (a fake
 * OpenAI-compatible server, test/fake_openai.ts) calls a client tool, the
 * test answers it, and the next turn quotes the result. */

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

const weather: MessageInitShape<typeof ToolDefinitionSchema> = {
  name: "weather",
  description: "The weather in a city.",
  // google.protobuf.Struct is a plain JSON object in protobuf-es.
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};

test("a tool loop on the session stream", async () => {
  const client = createAgentdClient({ target: server.target });
  const commands = commandQueue();
  commands.push({
    command: {
      case: "start",
      value: {
        model: "tools",
        messages: [{ role: Role.USER, content: "Weather in Paris?" }],
        tools: [weather],
        cache: { mode: CacheMode.OFF },
      },
    },
  });
  const kinds: string[] = [];
  let text = "";
  let queryId = "";
  for await (const response of client.query.session(commands)) {
    const kind = response.event?.kind;
    if (!kind?.case) continue;
    kinds.push(kind.case);
    queryId = response.event!.queryId;
    if (kind.case === "toolCall") {
      assert.equal(kind.value.name, "weather");
      assert.deepEqual(kind.value.arguments, { city: "Paris" });
      const info = await client.query.getQuery({ queryId });
      assert.equal(info.query?.state, QueryState.AWAITING_TOOLS);
      commands.push({
        command: {
          case: "toolResult",
          value: { callId: kind.value.callId, outcome: { case: "result", value: '{"sky": "clear"}' } },
        },
      });
    } else if (kind.case === "delta") {
      text += kind.value.text;
    } else if (kind.case === "completed") {
      assert.equal(kind.value.text, text);
      commands.close();
    }
  }
  commands.close();
  assert.equal(text, 'The weather: {"sky": "clear"}. ');
  assert.ok(kinds.indexOf("toolCall") < kinds.indexOf("toolResult"));
  const info = await client.query.getQuery({ queryId });
  assert.equal(info.query?.turns, 2);
  assert.equal(info.query?.toolCalls[0]?.result, '{"sky": "clear"}');
  // Answered once: a second result is refused.
  const callId = info.query!.toolCalls[0]!.call!.id;
  await assert.rejects(
    client.query.submitToolResult({ queryId, callId, outcome: { case: "result", value: "x" } }),
    (e) => {
      assert.equal(ConnectError.from(e).code, Code.FailedPrecondition);
      return true;
    },
  );
  // The second turn carried the tool result back to the model.
  const last = server.fakeOpenAI.requests.at(-1) as { messages: { role: string }[] };
  assert.equal(last.messages.at(-1)?.role, "tool");
});
