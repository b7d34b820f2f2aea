/**
 * `Worker`: an external worker for agentd's AgentService in a few lines.
 *
 * It opens a `Work` stream for one spec, heartbeats in the background, runs
 * each task the server leases to it with your handler, reports the result
 * (or the failure), and reconnects as the same agent when the stream breaks
 * (the server keeps its leases for a grace period, 5 s by default, and
 * sends them again). When the server withdraws a lease (CancelTask,
 * StopAgent, timeout) the task's `ctx.signal` aborts; a result sent after
 * that is refused by the server (`onAck` sees the refusal).
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import type { Task, WorkAck, WorkRequest, TaskAssignment } from "./gen/agentd/v1/agent_pb.js";
import { type ClientOptions, createAgentdClient } from "./index.js";

/** What a handler returns: the output text, or text and a structured output. */
export type TaskOutput = string | { text: string; output?: JsonObject };

/** Thrown by a handler: the task failed; `retryable` if another attempt may succeed. */
export class TaskFailed extends Error {
  constructor(
    message: string,
    readonly retryable = false,
  ) {
    super(message);
  }
}

/** What a handler knows of its lease, and how it talks back. */
export interface TaskContext {
  taskId: string;
  attempt: number;
  /** Outputs of the task's dependencies, by task id. */
  dependencyOutputs: Record<string, string>;
  /** The checkpoint the previous attempt saved, if any. */
  checkpoint?: JsonObject;
  /** Aborts when the server withdraws the lease. */
  signal: AbortSignal;
  /** Reports progress (0 to 1). */
  progress(fraction: number, message?: string): void;
  /** Saves a checkpoint, sent with the next heartbeat; the next attempt gets it. */
  save(state: JsonObject): void;
}

export interface WorkerOptions extends ClientOptions {
  /** The spec this worker serves (registered beforehand). */
  specName: string;
  /** Runs one task. */
  handler: (task: Task, ctx: TaskContext) => Promise<TaskOutput>;
  /** Most tasks at once; 0 means the spec's concurrency limit. */
  maxConcurrentTasks?: number;
  /** Reattach as this agent (e.g. one made by Spawn). */
  agentId?: string;
  /** Labels of a new agent. */
  labels?: Record<string, string>;
  /** Called with each acknowledgement (accepted or refused). */
  onAck?: (ack: WorkAck) => void;
  /** Wait before reconnecting; default 500 ms. */
  reconnectDelayMs?: number;
}

type Outgoing = WorkRequest["message"];

/** A queue the request stream reads from. */
class Outbox {
  private items: (Outgoing | null)[] = [];
  private wake: (() => void) | null = null;
  push(item: Outgoing | null): void {
    this.items.push(item);
    this.wake?.();
    this.wake = null;
  }
  async *drain(first: Outgoing): AsyncGenerator<{ message: Outgoing }> {
    yield { message: first };
    for (;;) {
      while (this.items.length === 0) await new Promise<void>((r) => (this.wake = r));
      const item = this.items.shift();
      if (item === null || item === undefined) return;
      yield { message: item };
    }
  }
}

/** Serves a spec until `run`'s signal aborts. */
export class Worker {
  /** The worker's agent id, once registered (kept across reconnects). */
  agentId: string;
  /** Resolves with the agent id once the server has registered the worker. */
  readonly registered: Promise<string>;
  private resolveRegistered!: (id: string) => void;
  private outbox: Outbox | null = null;
  private checkpoints = new Map<string, { taskId: string; attempt: number; data: JsonObject }>();
  private running = new Map<string, AbortController>();

  constructor(private readonly options: WorkerOptions) {
    this.agentId = options.agentId ?? "";
    this.registered = new Promise((r) => (this.resolveRegistered = r));
  }

  /** Connects, serves and reconnects until `signal` aborts. A refused hello
   * (unknown spec, a stopped agent) is thrown. */
  async run(signal?: AbortSignal): Promise<void> {
    while (!signal?.aborted) {
      try {
        await this.serveOnce(signal);
      } catch (e) {
        const err = ConnectError.from(e);
        if (signal?.aborted) return;
        if ([Code.InvalidArgument, Code.NotFound, Code.FailedPrecondition].includes(err.code)) throw err;
      }
      if (signal?.aborted) return;
      await new Promise((r) => setTimeout(r, this.options.reconnectDelayMs ?? 500));
    }
  }

  private send(message: Outgoing): void {
    this.outbox?.push(message);
  }

  private async serveOnce(signal?: AbortSignal): Promise<void> {
    const client = createAgentdClient(this.options);
    const outbox = new Outbox();
    this.outbox = outbox;
    let beats: NodeJS.Timeout | undefined;
    const hello: Outgoing = {
      case: "hello",
      value: {
        specName: this.options.specName,
        agentId: this.agentId,
        maxConcurrentTasks: this.options.maxConcurrentTasks ?? 0,
        labels: this.options.labels ?? {},
      } as never,
    };
    try {
      for await (const response of client.agents.work(outbox.drain(hello), { signal })) {
        const d = response.directive;
        if (d.case === "registered") {
          this.agentId = d.value.agentId;
          const every = Number(d.value.heartbeatInterval?.seconds ?? 10n) * 1000 +
            (d.value.heartbeatInterval?.nanos ?? 0) / 1e6;
          const beat = () => {
            const checkpoints = [...this.checkpoints.values()].map((c) => ({
              taskId: c.taskId,
              attempt: c.attempt,
              data: c.data,
            }));
            this.checkpoints.clear();
            this.send({ case: "heartbeat", value: { checkpoints } as never });
          };
          beat();
          beats = setInterval(beat, every);
          this.resolveRegistered(this.agentId);
        } else if (d.case === "assign") {
          this.start(d.value);
        } else if (d.case === "cancel") {
          this.running.get(d.value.taskId)?.abort(d.value.reason);
        } else if (d.case === "ack") {
          this.options.onAck?.(d.value);
        }
      }
    } finally {
      if (beats) clearInterval(beats);
      outbox.push(null);
    }
  }

  private start(assignment: TaskAssignment): void {
    const task = assignment.task;
    if (!task || this.running.has(task.id)) return; // sent again after a reconnect
    const abort = new AbortController();
    this.running.set(task.id, abort);
    const ctx: TaskContext = {
      taskId: task.id,
      attempt: task.attempt,
      dependencyOutputs: { ...assignment.dependencyOutputs },
      checkpoint: task.checkpoint,
      signal: abort.signal,
      progress: (fraction, message = "") =>
        this.send({
          case: "progress",
          value: { taskId: task.id, attempt: task.attempt, fraction, message } as never,
        }),
      save: (data) => this.checkpoints.set(task.id, { taskId: task.id, attempt: task.attempt, data }),
    };
    void (async () => {
      try {
        const out = await this.options.handler(task, ctx);
        const { text, output } = typeof out === "string" ? { text: out, output: undefined } : out;
        this.send({
          case: "result",
          value: {
            taskId: task.id,
            attempt: task.attempt,
            outputText: text,
            output,
          } as never,
        });
      } catch (e) {
        const retryable = e instanceof TaskFailed ? e.retryable : true;
        this.send({
          case: "failure",
          value: { taskId: task.id, attempt: task.attempt, message: String((e as Error)?.message ?? e), retryable } as never,
        });
      } finally {
        this.running.delete(task.id);
        this.checkpoints.delete(task.id);
      }
    })();
  }
}
