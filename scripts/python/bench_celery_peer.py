"""The Celery + Redis peer of benches/agents.rs's throughput part: the same
no-op task, durable in Redis (AOF, fsync every second, Redis's default for
AOF), run by one Celery worker with 100 concurrent slots (thread pool),
submitted by 16 client threads; tasks per second from the first submission
to the last result read back. Prints JSON.

    python bench_celery_peer.py <tasks> <redis-server binary>
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TASKS_MODULE = """
from celery import Celery
import os
app = Celery("noop", broker=os.environ["BROKER"], backend=os.environ["BROKER"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, result_expires=3600)

@app.task
def noop(x):
    return "ok"
"""


def main() -> None:
    tasks, redis_server = int(sys.argv[1]), sys.argv[2]
    work = tempfile.mkdtemp(prefix="celery-peer-")
    port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", work,
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{port}/0"
    with open(os.path.join(work, "noop_tasks.py"), "w") as f:
        f.write(TASKS_MODULE)
    env = dict(os.environ, BROKER=broker, PYTHONPATH=work)
    time.sleep(0.5)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "noop_tasks", "worker", "--pool", "threads",
         "-c", "100", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    sys.path.insert(0, work)
    os.environ["BROKER"] = broker
    import celery  # noqa: E402
    import noop_tasks  # noqa: E402

    # Warm up: the worker is up once a task comes back.
    noop_tasks.noop.delay(0).get(timeout=60)
    results = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        mine = [noop_tasks.noop.delay(i) for i in range(n)]
        with lock:
            results.extend(mine)

    per = tasks // 16
    started = time.monotonic()
    threads = [threading.Thread(target=submit, args=(per if k < 15 else tasks - per * 15,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r.get(timeout=600) == "ok"
    wall = time.monotonic() - started
    worker.terminate()
    worker.wait()
    redis.terminate()
    redis.wait()
    print(json.dumps({"celery": celery.__version__, "tasks": tasks, "wall_s": wall,
                      "tasks_per_s": tasks / wall, "worker_slots": 100}))


if __name__ == "__main__":
    main()
