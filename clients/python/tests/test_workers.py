"""External workers with the ``Worker`` helper, in separate processes
against the real server: a worker killed mid-task (SIGKILL) loses its lease
after the grace period and the other worker completes the task as attempt
2; the helper in-process takes leases, reports progress and results, and
is told of a cancellation."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentd.v1 import agent_pb2
from agentd_client import AsyncClient, Client, TaskFailed, Worker

WORKER = Path(__file__).with_name("worker_proc.py")


class WorkerProcess:
    """worker_proc.py, its JSON lines collected as they come."""

    def __init__(self, target: str, spec: str, seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), target, spec, str(seconds)],
            stdout=subprocess.PIPE, text=True,
        )
        self.lines = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._cv:
                self.lines.append(json.loads(line))
                self._cv.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                assert left > 0, f"not seen within {timeout}s: {self.lines}"
                self._cv.wait(left)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def register(client: Client, name: str) -> None:
    client.agents.RegisterSpec(agent_pb2.RegisterSpecRequest(
        spec=agent_pb2.AgentSpec(name=name, capabilities=[name])))


def submit(client: Client, capability: str, prompt: str) -> agent_pb2.Task:
    return client.agents.SubmitTask(agent_pb2.SubmitTaskRequest(
        target=agent_pb2.TaskTarget(capability=capability), prompt=prompt)).task


def wait_task(client: Client, task_id: str, timeout: float = 30.0) -> agent_pb2.Task:
    deadline = time.monotonic() + timeout
    while True:
        task = client.agents.GetTask(agent_pb2.GetTaskRequest(id=task_id)).task
        if task.state not in (agent_pb2.TASK_STATE_PENDING, agent_pb2.TASK_STATE_RUNNING):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.05)


def test_a_killed_worker_process_loses_its_task_to_another(server):
    with Client(server.target) as client:
        register(client, "py-kill")
        first = WorkerProcess(server.target, "py-kill", 30)
        try:
            first.wait_for(lambda l: l["event"] == "registered")
            task = submit(client, "py-kill", "crunch")
            first.wait_for(lambda l: l["event"] == "assigned" and l["task_id"] == task.id)
            second = WorkerProcess(server.target, "py-kill", 0.1)
            second.wait_for(lambda l: l["event"] == "registered")
            first.process.send_signal(signal.SIGKILL)
            retry = second.wait_for(lambda l: l["event"] == "assigned" and l["task_id"] == task.id)
            assert retry["attempt"] == 2
            done = wait_task(client, task.id)
            assert done.state == agent_pb2.TASK_STATE_SUCCEEDED
            assert done.output_text == "python worker, attempt 2"
            assert done.attempt == 2
            second.stop()
        finally:
            first.stop()


def test_the_worker_helper_reports_progress_results_failures_and_hears_cancels(server):
    async def scenario():
        cancelled = asyncio.Event()
        acks = []

        async def handler(task, ctx):
            if task.prompt == "wait":
                try:
                    await asyncio.sleep(60)
                finally:
                    cancelled.set()
            if task.prompt == "fail":
                raise TaskFailed("bad input", retryable=False)
            ctx.progress(0.5, "halfway")
            ctx.save({"step": 1})
            return f"did {task.prompt}", {"items": 3}

        async with AsyncClient(server.target) as client:
            await client.agents.RegisterSpec(agent_pb2.RegisterSpecRequest(
                spec=agent_pb2.AgentSpec(name="py-helper", capabilities=["py-helper"])))
            worker = Worker(server.target, "py-helper", handler, on_ack=acks.append)
            serving = asyncio.ensure_future(worker.run())
            await asyncio.wait_for(worker.registered.wait(), 10)

            async def finished(task_id):
                while True:
                    t = (await client.agents.GetTask(agent_pb2.GetTaskRequest(id=task_id))).task
                    if t.state not in (agent_pb2.TASK_STATE_PENDING, agent_pb2.TASK_STATE_RUNNING):
                        return t
                    await asyncio.sleep(0.02)

            async def send(prompt):
                return (await client.agents.SubmitTask(agent_pb2.SubmitTaskRequest(
                    target=agent_pb2.TaskTarget(agent_id=worker.agent_id), prompt=prompt))).task

            ok = await asyncio.wait_for(finished((await send("the work")).id), 10)
            assert ok.output_text == "did the work"
            assert ok.output.fields["items"].number_value == 3
            assert ok.progress == 0.5 and ok.progress_message == "halfway"
            failed = await asyncio.wait_for(finished((await send("fail")).id), 10)
            assert failed.state == agent_pb2.TASK_STATE_FAILED
            assert failed.error.reason == "WORKER_FAILED"
            assert "bad input" in failed.error.message
            waiting = await send("wait")
            await asyncio.sleep(0.3)
            await client.agents.CancelTask(agent_pb2.CancelTaskRequest(id=waiting.id))
            await asyncio.wait_for(cancelled.wait(), 10)
            assert all(a.accepted for a in acks), acks
            worker.stop()
            await asyncio.wait_for(serving, 10)

    asyncio.run(scenario())
