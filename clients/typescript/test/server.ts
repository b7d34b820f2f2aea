/**
 * Starts the real agentd binary on a free loopback port: `$AGENTD_BIN`, else
 * the release build under `$CARGO_TARGET_DIR` (`scripts/test` builds it).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { type AgentdClient, createAgentdClient } from "../src/index.js";
import { type FakeOpenAI, startFakeOpenAI } from "./fake_openai.js";

export function agentdBinary(): string {
  if (process.env.AGENTD_BIN) return process.env.AGENTD_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), ".cache/agentd/target");
  return join(target, "release", "agentd");
}

/** all-MiniLM-L6-v2, put under models/ by scripts/fetch-models. */
export function modelDir(): string {
  const dir =
    process.env.AGENTD_TEST_MODEL_DIR ??
    join(dirname(fileURLToPath(import.meta.url)), "../../../../models/all-MiniLM-L6-v2");
  if (!existsSync(join(dir, "model.safetensors"))) {
    throw new Error(`all-MiniLM-L6-v2 not found in ${dir}: run scripts/fetch-models`);
  }
  return dir;
}

/** Gemma 3 270M (GGUF), put under models/ by scripts/fetch-models. */
export function localModel(): string {
  const path = join(
    dirname(fileURLToPath(import.meta.url)),
    "../../../../models/gemma-3-270m/gemma-3-270m-Q4_K_M.gguf",
  );
  if (!existsSync(path)) {
    throw new Error(`Gemma 3 270M not found at ${path}: run scripts/fetch-models`);
  }
  return path;
}

/** agentd.toml in the server's working directory: two aliases of the local
 * model, so sessions can switch model with no network, and `tools`, an
 * OpenAI-compatible alias served by the fake at `openaiUrl`. */
function writeConfig(dir: string, openaiUrl: string): void {
  const aliases = ["local", "local-b"]
    .map(
      (alias) =>
        `[[query.models]]\nalias = "${alias}"\nprovider = "local"\nmodel_id = "gemma-3-270m"\n` +
        `path = "${localModel()}"\ncontext_window = 2048\n\n`,
    )
    .join("");
  const tools =
    `[[query.models]]\nalias = "tools"\nprovider = "openai"\nmodel_id = "fake-tools"\n` +
    `base_url = "${openaiUrl}"\n\n`;
  // Short worker leases, so that the worker tests see lapses in seconds.
  const agents =
    `[agents]\nworker_heartbeat_interval = "200ms"\nworker_lease_timeout = "1500ms"\n` +
    `worker_grace = "500ms"\n\n`;
  writeFileSync(join(dir, "agentd.toml"), `[query]\nlocal_threads = 2\n\n${agents}${aliases}${tools}`);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface RunningServer {
  target: string;
  process: ChildProcess;
  /** The fake OpenAI-compatible provider behind the `tools` alias. */
  fakeOpenAI: FakeOpenAI;
  stop(): Promise<void>;
}

async function waitServing(client: AgentdClient, child: ChildProcess, ms = 60_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false;
    try {
      // The server, and the embedding model it loads in the background.
      const statuses = [await client.health(), await client.health("agentd.v1.EmbeddingService")];
      if (statuses.every((s) => s === "SERVING")) return true;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

export async function startServer(): Promise<RunningServer> {
  const binary = agentdBinary();
  if (!existsSync(binary)) {
    throw new Error(`agentd binary not found at ${binary}; run cargo build --release or set AGENTD_BIN`);
  }
  const dir = mkdtempSync(join(tmpdir(), "agentd-ts-"));
  const fakeOpenAI = await startFakeOpenAI();
  writeConfig(dir, fakeOpenAI.url);
  // The port is free when chosen; retry if another process takes it first.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const target = `127.0.0.1:${port}`;
    const log = openSync(join(dir, `agentd-${port}.log`), "w");
    const child = spawn(
      binary,
      [
        "serve",
        "--listen",
        target,
        "--data-dir",
        join(dir, "data"),
        "--shutdown-grace",
        "1s",
        "--embedding-model-dir",
        modelDir(),
        "--metrics-listen",
        "off",
      ],
      { cwd: dir, stdio: ["ignore", log, log] },
    );
    const stop = () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      });
    if (await waitServing(createAgentdClient({ target }), child, 30_000)) {
      return {
        target,
        process: child,
        fakeOpenAI,
        stop: async () => {
          await stop();
          await fakeOpenAI.stop();
        },
      };
    }
    await stop();
  }
  await fakeOpenAI.stop();
  throw new Error(`agentd did not become healthy; logs under ${dir}`);
}
