"""A worker process for the cross-process tests (Python and TypeScript
suites): serves a spec with the ``Worker`` helper; each task is
``seconds`` of blocking work; what happens is printed as JSON lines:
``registered`` (agent_id), ``assigned`` (task_id, attempt) and ``ack``.

    python worker_proc.py <target> <spec> <seconds>
"""

import asyncio
import json
import sys
import time

from agentd_client import Worker


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


def main() -> None:
    target, spec, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def handler(task, ctx):
        say(event="assigned", task_id=task.id, attempt=ctx.attempt)
        time.sleep(seconds)  # blocking work, in the helper's thread
        return f"python worker, attempt {ctx.attempt}"

    def on_ack(ack) -> None:
        say(event="ack", task_id=ack.task_id, attempt=ack.attempt, accepted=ack.accepted,
            of=ack.of, reason=ack.reason)

    worker = Worker(target, spec, handler, on_ack=on_ack)

    async def run() -> None:
        serving = asyncio.ensure_future(worker.run())
        await worker.registered.wait()
        say(event="registered", agent_id=worker.agent_id)
        await serving

    asyncio.run(run())


if __name__ == "__main__":
    main()
