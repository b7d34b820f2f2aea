/**
 * A fake OpenAI-compatible chat-completions server on 127.0.0.1 that streams
 * real `chat.completion.chunk` server-sent events, so that the tests can run
 * a tool loop through the real agentd binary with no network: when a request
 * offers tools and holds no tool result yet, the "model" calls `weather` with
 * `{"city": "Paris"}` (arguments sent in two fragments); otherwise it answers
 * with one sentence that quotes the last tool result.
 */
import { type Server, createServer } from "node:http";

export interface FakeOpenAI {
  url: string;
  /** The JSON bodies received, in order. */
  requests: Record<string, unknown>[];
  stop(): Promise<void>;
}

type Msg = { role: string; content?: string };

export async function startFakeOpenAI(): Promise<FakeOpenAI> {
  const requests: Record<string, unknown>[] = [];
  const server: Server = createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => {
      raw += c;
    });
    req.on("end", () => {
      const body = JSON.parse(raw) as { tools?: unknown[]; messages?: Msg[] };
      requests.push(body);
      res.writeHead(200, { "content-type": "text/event-stream", connection: "close" });
      const send = (data: unknown) => res.write(`data: ${JSON.stringify(data)}\n\n`);
      const chunk = (delta: unknown, finish: string | null = null) =>
        send({
          id: "c1",
          object: "chat.completion.chunk",
          choices: [{ index: 0, delta, finish_reason: finish }],
        });
      const results = (body.messages ?? []).filter((m) => m.role === "tool");
      if ((body.tools?.length ?? 0) > 0 && results.length === 0) {
        chunk({
          tool_calls: [
            { index: 0, id: "call_1", type: "function", function: { name: "weather", arguments: "" } },
          ],
        });
        for (const part of ['{"city"', ': "Paris"}']) {
          chunk({ tool_calls: [{ index: 0, function: { arguments: part } }] });
        }
        chunk({}, "tool_calls");
      } else {
        const answer = results.length > 0 ? `The weather: ${results.at(-1)!.content}.` : "Hello.";
        for (const word of answer.split(" ")) chunk({ content: `${word} ` });
        chunk({}, "stop");
      }
      send({
        id: "c1",
        object: "chat.completion.chunk",
        choices: [],
        usage: { prompt_tokens: 5, completion_tokens: 3 },
      });
      res.end("data: [DONE]\n\n");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
