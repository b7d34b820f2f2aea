/**
 * A thin wrapper over the code generated from agentd's .proto files.
 *
 * `createAgentdClient` opens one gRPC (HTTP/2) transport to an agentd server
 * and returns one typed client per service. Messages are protobuf-es v2
 * schemas: requests may be given as plain objects, streaming calls are async
 * iterables both ways. Generated types are importable from
 * `@agentd/client/gen/agentd/v1/<file>_pb`.
 */
import {
  type Client,
  ConnectError,
  type Interceptor,
  type Transport,
  createClient,
} from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";

import { AgentService } from "./gen/agentd/v1/agent_pb.js";
import { EmbeddingService } from "./gen/agentd/v1/embedding_pb.js";
import { MemoryService } from "./gen/agentd/v1/memory_pb.js";
import { QueryControlService } from "./gen/agentd/v1/query_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "./gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "./gen/grpc/reflection/v1/reflection_pb.js";

export { AgentService, EmbeddingService, MemoryService, QueryControlService };
export { ConnectError, Code } from "@connectrpc/connect";
export { Worker, TaskFailed, type TaskContext, type TaskOutput, type WorkerOptions } from "./worker.js";

/** Full names of the four agentd services, as health and reflection report them. */
export const SERVICES = [
  "agentd.v1.EmbeddingService",
  "agentd.v1.MemoryService",
  "agentd.v1.QueryControlService",
  "agentd.v1.AgentService",
] as const;

/** How to reach the server. */
export interface ClientOptions {
  /** `host:port`; default `127.0.0.1:50051`. */
  target?: string;
  /** Connect with TLS. */
  tls?: boolean;
  /** PEM root certificates for TLS; Node's defaults when omitted. */
  ca?: string | Buffer;
  /** PEM client certificate, for servers that require one (`--tls-client-ca`: mutual TLS); with `key`. */
  cert?: string | Buffer;
  /** PEM key of `cert`. */
  key?: string | Buffer;
  /**
   * Sent as `authorization: Bearer <apiKey>` on every call. A server that
   * requires keys answers Unauthenticated without one and PermissionDenied for
   * a key whose scope or namespaces do not cover the call (see `errorDetails`).
   */
  apiKey?: string;
  /** Compress requests with gzip (responses are accepted compressed either way). */
  gzip?: boolean;
  /** More Connect interceptors, run after the API-key one. */
  interceptors?: Interceptor[];
}

/** One client per agentd service, sharing one transport. */
export interface AgentdClient {
  embedding: Client<typeof EmbeddingService>;
  memory: Client<typeof MemoryService>;
  query: Client<typeof QueryControlService>;
  agents: Client<typeof AgentService>;
  /** grpc.health.v1.Health, for watching. */
  healthService: Client<typeof Health>;
  /** grpc.reflection.v1.ServerReflection (list services, fetch descriptors). */
  reflection: Client<typeof ServerReflection>;
  /** The serving status of `service` ("" for the whole server): "SERVING", "NOT_SERVING", ... */
  health(service?: string): Promise<string>;
  /** Names of the services the server exposes, from server reflection. */
  listServices(): Promise<string[]>;
  /** The underlying transport, for clients of other services on the same port. */
  transport: Transport;
}

/** Creates a client. Nothing connects until the first call. */
export function createAgentdClient(options: ClientOptions = {}): AgentdClient {
  const target = options.target ?? "127.0.0.1:50051";
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new Error("cert and key go together (mutual TLS)");
  }
  // Any certificate implies TLS.
  const tls = options.tls || options.ca !== undefined || options.cert !== undefined;
  const tlsOptions = { ca: options.ca, cert: options.cert, key: options.key };
  const interceptors: Interceptor[] = [];
  if (options.apiKey) {
    const header = `Bearer ${options.apiKey}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", header);
      return next(req);
    });
  }
  interceptors.push(...(options.interceptors ?? []));
  const transport = createGrpcTransport({
    baseUrl: `${tls ? "https" : "http"}://${target}`,
    interceptors,
    acceptCompression: [compressionGzip],
    sendCompression: options.gzip ? compressionGzip : undefined,
    nodeOptions: tls ? tlsOptions : undefined,
  });
  const healthService = createClient(Health, transport);
  const reflection = createClient(ServerReflection, transport);
  return {
    embedding: createClient(EmbeddingService, transport),
    memory: createClient(MemoryService, transport),
    query: createClient(QueryControlService, transport),
    agents: createClient(AgentService, transport),
    healthService,
    reflection,
    transport,
    async health(service = "") {
      const response = await healthService.check({ service });
      return HealthCheckResponse_ServingStatus[response.status];
    },
    async listServices() {
      async function* oneRequest() {
        yield { messageRequest: { case: "listServices" as const, value: "" } };
      }
      for await (const response of reflection.serverReflectionInfo(oneRequest())) {
        if (response.messageResponse.case === "listServicesResponse") {
          return response.messageResponse.value.service.map((s) => s.name);
        }
        if (response.messageResponse.case === "errorResponse") {
          throw new Error(response.messageResponse.value.errorMessage);
        }
      }
      throw new Error("server reflection sent no service list");
    },
  };
}

/** What an agentd error says beyond its code and message. */
export interface ErrorDetails {
  /** agentd.v1.ErrorReason name without its prefix, e.g. "INVALID_FIELD"; "" if absent. */
  reason: string;
  /** ErrorInfo domain ("agentd.dev"). */
  domain: string;
  /** ErrorInfo metadata, e.g. { engine: "memory engine" }. */
  metadata: Record<string, string>;
  /** Each invalid field and what is wrong with it. */
  fieldViolations: { field: string; description: string }[];
  /** Milliseconds to wait before retrying (google.rpc.RetryInfo), when waiting is enough: a key over its rate ("RATE_LIMITED"). */
  retryDelayMs?: number;
  /** The server refused the call's API key: "UNAUTHENTICATED" (none, or unknown) or "PERMISSION_DENIED" (its scope or namespaces). */
  isAuthError: boolean;
}

/** Decodes the google.rpc details of an error thrown by a call. */
export function errorDetails(error: unknown): ErrorDetails {
  const err = ConnectError.from(error);
  const [info] = err.findDetails(ErrorInfoSchema);
  const bad = err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
  const [retry] = err.findDetails(RetryInfoSchema);
  const delay = retry?.retryDelay;
  const reason = info?.reason ?? "";
  return {
    reason,
    domain: info?.domain ?? "",
    metadata: { ...(info?.metadata ?? {}) },
    fieldViolations: bad.map((v) => ({ field: v.field, description: v.description })),
    retryDelayMs: delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined,
    isAuthError: reason === "UNAUTHENTICATED" || reason === "PERMISSION_DENIED",
  };
}
