/** Session commands as the tests write them while reading the events. */
import type { MessageInitShape } from "@bufbuild/protobuf";

import type { SessionRequestSchema } from "../src/gen/agentd/v1/query_pb.js";

export type Command = MessageInitShape<typeof SessionRequestSchema>;

/** Commands written while the session is being read: an async iterable the
 * test pushes into. */
export function commandQueue() {
  const pending: Command[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  return {
    push(command: Command) {
      pending.push(command);
      wake?.();
    },
    close() {
      closed = true;
      wake?.();
    },
    async *[Symbol.asyncIterator](): AsyncGenerator<Command> {
      for (;;) {
        const next = pending.shift();
        if (next) {
          yield next;
        } else if (closed) {
          return;
        } else {
          await new Promise<void>((r) => {
            wake = r;
          });
        }
      }
    },
  };
}
