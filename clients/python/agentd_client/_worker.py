"""``Worker``: an external worker for agentd's AgentService in a few lines.

It connects a ``Work`` stream for one spec, heartbeats in the background,
runs each task the server leases to it with your handler, reports the
result (or the failure), and reconnects as the same agent when the stream
breaks (the server keeps its leases for a grace period, 5 s by default,
and sends them again).

The handler gets the task (``agentd.v1.agent_pb2.Task``) and a
``TaskContext``, and returns the output text, or ``(text, dict)`` for a
structured output too. Raise ``TaskFailed`` (``retryable`` or not) to
fail the task; any other exception fails it as retryable. A coroutine
handler is cancelled when the server withdraws the lease (CancelTask,
StopAgent, timeout); a plain function runs in a thread, should poll
``ctx.cancelled``, and what it returns after a withdrawal is refused by the
server (``on_ack`` sees the refusal).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional, Tuple, Union

import grpc
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from agentd.v1 import agent_pb2

from ._client import AsyncClient

log = logging.getLogger("agentd_client.worker")

Output = Union[str, Tuple[str, Mapping[str, Any]]]
Handler = Callable[[agent_pb2.Task, "TaskContext"], Union[Output, Awaitable[Output]]]


class TaskFailed(Exception):
    """Raised by a handler: the task failed; ``retryable`` if another attempt
    (maybe on another agent) may succeed."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def _struct(data: Mapping[str, Any]) -> Struct:
    s = Struct()
    s.update(dict(data))
    return s


@dataclass
class TaskContext:
    """What a handler knows of its lease, and how it talks back."""

    task_id: str
    attempt: int
    #: Outputs of the task's dependencies, by task id.
    dependency_outputs: Dict[str, str]
    #: The checkpoint the previous attempt saved, if any.
    checkpoint: Optional[Dict[str, Any]]
    #: Set when the server withdraws the lease.
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    _worker: Optional["Worker"] = None

    def progress(self, fraction: float, message: str = "") -> None:
        """Reports progress (0 to 1); safe to call from a thread."""
        self._worker._send_soon(
            agent_pb2.WorkRequest(
                progress=agent_pb2.TaskProgress(
                    task_id=self.task_id, attempt=self.attempt, fraction=fraction, message=message
                )
            )
        )

    def save(self, state: Mapping[str, Any]) -> None:
        """Saves a checkpoint, sent with the next heartbeat; the next attempt
        (after a crash) receives it as ``ctx.checkpoint``."""
        self._worker._checkpoints[self.task_id] = agent_pb2.TaskCheckpoint(
            task_id=self.task_id, attempt=self.attempt, data=_struct(state)
        )


class Worker:
    """Serves ``spec_name`` with ``handler`` until ``stop()`` (or the task
    running ``run()`` is cancelled).

    Args:
        target: ``host:port`` of the server.
        spec_name: the spec this worker serves (registered beforehand).
        handler: ``(task, ctx) -> text | (text, dict)``, sync or async.
        max_concurrent_tasks: 0 means the spec's concurrency limit.
        agent_id: reattach as this agent (e.g. one made by Spawn).
        on_ack: called with each ``agentd.v1.WorkAck`` (accepted or refused).
        client_options: passed to ``AsyncClient`` (tls, api_key, ...).
    """

    def __init__(
        self,
        target: str,
        spec_name: str,
        handler: Handler,
        *,
        max_concurrent_tasks: int = 0,
        labels: Optional[Mapping[str, str]] = None,
        agent_id: str = "",
        on_ack: Optional[Callable[[agent_pb2.WorkAck], None]] = None,
        reconnect_delay: float = 0.5,
        **client_options: Any,
    ) -> None:
        self.target = target
        self.spec_name = spec_name
        self.handler = handler
        self.max_concurrent_tasks = max_concurrent_tasks
        self.labels = dict(labels or {})
        self.agent_id = agent_id
        self.on_ack = on_ack
        self.reconnect_delay = reconnect_delay
        self.client_options = client_options
        self._stopping = asyncio.Event()
        self._outbox: Optional[asyncio.Queue] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._checkpoints: Dict[str, agent_pb2.TaskCheckpoint] = {}
        self._running: Dict[str, Tuple[asyncio.Task, TaskContext]] = {}
        #: Set once the server has registered this worker (``agent_id`` known).
        self.registered = asyncio.Event()

    def stop(self) -> None:
        """Ends ``run()`` after closing the stream."""
        self._stopping.set()

    async def run(self) -> None:
        """Connects, serves, and reconnects until stopped. Refusals of the
        hello itself (unknown spec, a stopped agent) are raised."""
        self._loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                await self._serve_once()
            except grpc.aio.AioRpcError as e:
                if e.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ):
                    raise
                log.warning("work stream ended (%s); reconnecting", e.code().name)
            if not self._stopping.is_set():
                await asyncio.sleep(self.reconnect_delay)

    def _send_soon(self, request: agent_pb2.WorkRequest) -> None:
        """Queues a message for the stream, from the loop or a thread."""
        if self._outbox is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._outbox.put_nowait, request)

    async def _serve_once(self) -> None:
        self._outbox = asyncio.Queue()
        hello = agent_pb2.WorkRequest(
            hello=agent_pb2.WorkerHello(
                spec_name=self.spec_name,
                agent_id=self.agent_id,
                max_concurrent_tasks=self.max_concurrent_tasks,
                labels=self.labels,
            )
        )
        outbox = self._outbox

        async def requests():
            yield hello
            while True:
                item = await outbox.get()
                if item is None:
                    return
                yield item

        async with AsyncClient(self.target, **self.client_options) as client:
            call = client.agents.Work(requests())
            beats: Optional[asyncio.Task] = None
            stopper = asyncio.ensure_future(self._stopping.wait())
            try:
                reader = call.__aiter__()
                while True:
                    nxt = asyncio.ensure_future(reader.__anext__())
                    done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if stopper in done:
                        nxt.cancel()
                        call.cancel()
                        return
                    try:
                        response = nxt.result()
                    except StopAsyncIteration:
                        return
                    kind = response.WhichOneof("directive")
                    if kind == "registered":
                        self.agent_id = response.registered.agent_id
                        interval = response.registered.heartbeat_interval.ToTimedelta().total_seconds()
                        beats = asyncio.ensure_future(self._heartbeats(interval))
                        self.registered.set()
                    elif kind == "assign":
                        self._start(response.assign)
                    elif kind == "cancel":
                        self._withdraw(response.cancel.task_id)
                    elif kind == "ack":
                        if self.on_ack is not None:
                            self.on_ack(response.ack)
            finally:
                stopper.cancel()
                if beats is not None:
                    beats.cancel()
                outbox.put_nowait(None)

    async def _heartbeats(self, interval: float) -> None:
        while True:
            checkpoints = list(self._checkpoints.values())
            self._checkpoints.clear()
            await self._outbox.put(
                agent_pb2.WorkRequest(heartbeat=agent_pb2.WorkerHeartbeat(checkpoints=checkpoints))
            )
            await asyncio.sleep(interval)

    def _start(self, assignment: agent_pb2.TaskAssignment) -> None:
        task = assignment.task
        if task.id in self._running:
            return  # sent again after a reconnect: it is already running here
        checkpoint = (
            json_format.MessageToDict(task.checkpoint) if task.HasField("checkpoint") else None
        )
        ctx = TaskContext(
            task_id=task.id,
            attempt=task.attempt,
            dependency_outputs=dict(assignment.dependency_outputs),
            checkpoint=checkpoint,
            _worker=self,
        )
        job = asyncio.ensure_future(self._run_task(task, ctx))
        self._running[task.id] = (job, ctx)

    def _withdraw(self, task_id: str) -> None:
        running = self._running.get(task_id)
        if running is None:
            return
        job, ctx = running
        ctx.cancelled.set()
        if inspect.iscoroutinefunction(self.handler):
            job.cancel()

    async def _run_task(self, task: agent_pb2.Task, ctx: TaskContext) -> None:
        try:
            if inspect.iscoroutinefunction(self.handler):
                output = await self.handler(task, ctx)
            else:
                output = await asyncio.to_thread(self.handler, task, ctx)
            text, data = (output, None) if isinstance(output, str) else output
            result = agent_pb2.TaskResult(task_id=task.id, attempt=ctx.attempt, output_text=text)
            if data is not None:
                result.output.CopyFrom(_struct(data))
            self._send_soon(agent_pb2.WorkRequest(result=result))
        except asyncio.CancelledError:
            pass
        except TaskFailed as e:
            self._send_soon(
                agent_pb2.WorkRequest(
                    failure=agent_pb2.TaskFailure(
                        task_id=task.id, attempt=ctx.attempt, message=str(e), retryable=e.retryable
                    )
                )
            )
        except Exception as e:  # a handler's bug: another attempt may pass
            log.exception("task %s failed", task.id)
            self._send_soon(
                agent_pb2.WorkRequest(
                    failure=agent_pb2.TaskFailure(
                        task_id=task.id, attempt=ctx.attempt, message=repr(e), retryable=True
                    )
                )
            )
        finally:
            self._running.pop(task.id, None)
            # A checkpoint of an attempt that has ended would be refused.
            self._checkpoints.pop(task.id, None)
