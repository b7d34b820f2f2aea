/**
 * External workers in separate processes, one TypeScript and one Python
 * (both with their client's `Worker` helper), against the real server with
 * short leases: a worker stopped with SIGSTOP loses its lease, the other
 * completes the task as attempt 2, and the stopped one's result after
 * SIGCONT is refused; a worker killed with SIGKILL loses its task to the
 * other after the grace period.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { TaskState, type Task } from "../src/gen/agentd/v1/agent_pb.js";
import { createAgentdClient } from "../src/index.js";
import { type RunningServer, startServer } from "./server.js";

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

const here = dirname(fileURLToPath(import.meta.url));
type Line = Record<string, unknown>;

/** A worker process and the JSON lines it has printed. */
class WorkerProcess {
  readonly lines: Line[] = [];
  private waiters: (() => void)[] = [];
  readonly child: ChildProcess;
  constructor(command: string, args: string[]) {
    this.child = spawn(command, args, { stdio: ["ignore", "pipe", "inherit"] });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      this.lines.push(JSON.parse(line));
      for (const w of this.waiters.splice(0)) w();
    });
  }
  async waitFor(predicate: (l: Line) => boolean, ms = 20_000): Promise<Line> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.lines.find(predicate);
      if (found) return found;
      const left = deadline - Date.now();
      assert.ok(left > 0, `not seen within ${ms} ms: ${JSON.stringify(this.lines)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, left);
      });
    }
  }
  kill(): void {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

function typescriptWorker(spec: string, seconds: number): WorkerProcess {
  return new WorkerProcess(process.execPath, [join(here, "worker_proc.js"), server.target, spec, String(seconds)]);
}

function pythonWorker(spec: string, seconds: number): WorkerProcess {
  const venv = process.env.AGENTD_VENV ?? join(process.env.HOME ?? "", ".cache/agentd/venv");
  const script = join(here, "../../../python/tests/worker_proc.py");
  return new WorkerProcess(join(venv, "bin/python"), [script, server.target, spec, String(seconds)]);
}

async function finished(id: string): Promise<Task> {
  const client = createAgentdClient({ target: server.target });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { task } = await client.agents.getTask({ id });
    if (task && task.state !== TaskState.PENDING && task.state !== TaskState.RUNNING) return task;
    assert.ok(Date.now() < deadline, `task ${id} did not end`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function setUp(spec: string): Promise<ReturnType<typeof createAgentdClient>> {
  const client = createAgentdClient({ target: server.target });
  await client.agents.registerSpec({ spec: { name: spec, capabilities: [spec] } });
  return client;
}

test("a stopped TypeScript worker loses its lease to a Python worker, and its late result is refused", async () => {
  const client = await setUp("mixed-stop");
  const ts = typescriptWorker("mixed-stop", 3);
  let py: WorkerProcess | undefined;
  try {
    await ts.waitFor((l) => l.event === "registered");
    const { task } = await client.agents.submitTask({
      target: { target: { case: "capability", value: "mixed-stop" } },
      prompt: "work",
    });
    const id = task!.id;
    await ts.waitFor((l) => l.event === "assigned" && l.task_id === id);
    // The second worker comes once the first holds the task.
    py = pythonWorker("mixed-stop", 0.1);
    await py.waitFor((l) => l.event === "registered");
    ts.child.kill("SIGSTOP");
    const retry = await py.waitFor((l) => l.event === "assigned" && l.task_id === id);
    assert.equal(retry.attempt, 2);
    const done = await finished(id);
    assert.equal(done.state, TaskState.SUCCEEDED);
    assert.equal(done.outputText, "python worker, attempt 2");
    ts.child.kill("SIGCONT");
    const late = await ts.waitFor((l) => l.event === "ack" && l.task_id === id && l.of === "result");
    assert.equal(late.accepted, false, JSON.stringify(late));
    assert.equal(late.attempt, 1);
    const after = await finished(id);
    assert.equal(after.outputText, "python worker, attempt 2", "the new attempt's result stands");
  } finally {
    ts.kill();
    py?.kill();
  }
});

test("a killed Python worker loses its task to a TypeScript worker after the grace period", async () => {
  const client = await setUp("mixed-kill");
  const py = pythonWorker("mixed-kill", 30);
  let ts: WorkerProcess | undefined;
  try {
    await py.waitFor((l) => l.event === "registered");
    const { task } = await client.agents.submitTask({
      target: { target: { case: "capability", value: "mixed-kill" } },
      prompt: "work",
    });
    const id = task!.id;
    await py.waitFor((l) => l.event === "assigned" && l.task_id === id);
    ts = typescriptWorker("mixed-kill", 0.1);
    await ts.waitFor((l) => l.event === "registered");
    py.child.kill("SIGKILL");
    const retry = await ts.waitFor((l) => l.event === "assigned" && l.task_id === id);
    assert.equal(retry.attempt, 2);
    const done = await finished(id);
    assert.equal(done.state, TaskState.SUCCEEDED);
    assert.equal(done.outputText, "typescript worker, attempt 2");
    assert.equal(done.attempt, 2);
  } finally {
    ts?.kill();
    py.kill();
  }
});
