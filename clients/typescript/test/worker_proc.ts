/**
 * A worker process for the cross-process tests: serves a spec with the
 * `Worker` helper; each task takes `seconds`; what happens is printed as
 * JSON lines: `registered` (agentId), `assigned` (taskId, attempt), `ack`.
 *
 *     node dist/test/worker_proc.js <target> <spec> <seconds>
 */
import { Worker } from "../src/index.js";

const [target, specName, seconds] = process.argv.slice(2);
const say = (fields: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(fields)}\n`);

const worker = new Worker({
  target,
  specName,
  handler: async (task, ctx) => {
    say({ event: "assigned", task_id: task.id, attempt: ctx.attempt });
    await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
    return `typescript worker, attempt ${ctx.attempt}`;
  },
  onAck: (ack) =>
    say({ event: "ack", task_id: ack.taskId, attempt: ack.attempt, accepted: ack.accepted, of: ack.of, reason: ack.reason }),
});
void worker.registered.then((agentId) => say({ event: "registered", agent_id: agentId }));
await worker.run();
