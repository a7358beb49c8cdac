"""How a claim's failure ends (services/runtime/run/loop.py, `RunLoop._failure`), with recording stubs: a dependency
away (UNAVAILABLE, DEADLINE_EXCEEDED) gives the run back; a model step's failure (`StepError`) fails the run whatever
its code, told as transient; any other error fails it.

Every failure from a dependency is a `StewardError` (the runtime's channels decode them), so only `StepError` tells a
model step's failure apart from the store or confirm service being away."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from services.runtime.hooks import Hooks
from services.runtime.run.context import Services
from services.runtime.run.loop import RunLoop
from services.runtime.run.model_step import StepError
from steward.errors import Reason, StewardError
from steward.store.v1 import run_pb2
from steward.store.v1 import store_service_pb2 as store_pb


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def ReleaseRun(self, request: store_pb.ReleaseRunRequest) -> store_pb.ReleaseRunResponse:
        self.calls.append(("ReleaseRun", request))
        return store_pb.ReleaseRunResponse()

    async def CheckpointRun(self, request: store_pb.CheckpointRunRequest) -> store_pb.CheckpointRunResponse:
        self.calls.append(("CheckpointRun", request))
        return store_pb.CheckpointRunResponse(last_event_seq=len(request.events))

    async def CancelConfirmations(self, request: object) -> object:
        self.calls.append(("CancelConfirmations", request))
        return object()


def _loop(recorder: _Recorder) -> RunLoop:
    services = SimpleNamespace(runs=recorder, confirm=recorder, hooks=Hooks(), settings=SimpleNamespace())
    return RunLoop(cast(Services, services))


def _away(code: grpc.StatusCode) -> StewardError:
    return StewardError(code, Reason.DEPENDENCY_UNAVAILABLE, "away")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_a_dependency_away_gives_the_run_back(code: grpc.StatusCode) -> None:
    recorder = _Recorder()
    await _loop(recorder)._failure(_away(code), "run-1", 3, None)
    assert [name for name, _ in recorder.calls] == ["ReleaseRun"]
    assert recorder.calls[0][1] == store_pb.ReleaseRunRequest(id="run-1", lease_epoch=3)


async def test_a_model_steps_failure_fails_the_run_whatever_its_code() -> None:
    recorder = _Recorder()
    await _loop(recorder)._failure(StepError.of(_away(grpc.StatusCode.UNAVAILABLE)), "run-1", 3, None)
    assert [name for name, _ in recorder.calls] == ["CheckpointRun", "CancelConfirmations"]
    checkpoint = recorder.calls[0][1]
    assert checkpoint.state == run_pb2.RUN_STATE_FAILED
    assert (checkpoint.error.reason, checkpoint.error.transient) == ("DEPENDENCY_UNAVAILABLE", True)


async def test_any_other_error_fails_the_run() -> None:
    recorder = _Recorder()
    refused = StewardError(grpc.StatusCode.NOT_FOUND, Reason.AGENT_NOT_FOUND, "no such agent")
    await _loop(recorder)._failure(refused, "run-1", 3, None)
    assert [name for name, _ in recorder.calls] == ["CheckpointRun", "CancelConfirmations"]
    checkpoint = recorder.calls[0][1]
    assert (checkpoint.state, checkpoint.error.reason, checkpoint.error.transient) == (
        run_pb2.RUN_STATE_FAILED,
        "AGENT_NOT_FOUND",
        False,
    )
