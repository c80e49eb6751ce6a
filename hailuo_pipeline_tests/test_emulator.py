"""The emulator speaks fal's queue protocol to the real fal_client."""

from __future__ import annotations

import asyncio
import io

import fal_client
import httpx
import pytest
from PIL import Image

from hailuo_pipeline.model_limits import ENDPOINT_ID
from hailuo_pipeline.video.probe import probe_video


def data_uri(size=(640, 360), fmt="JPEG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format=fmt)
    return fal_client.encode(buffer.getvalue(), f"image/{fmt.lower()}")


def run(coro):
    return asyncio.run(coro)


def test_submit_status_with_logs_and_result(emulator, tmp_path):
    async def go():
        client = fal_client.AsyncClient(key="k")
        handle = await client.submit(ENDPOINT_ID, {"prompt": "waves", "image_url": data_uri(), "duration": "6"})
        events = [event async for event in handle.iter_events(with_logs=True, interval=0.1)]
        result = await handle.get()
        async with httpx.AsyncClient() as http:
            video = (await http.get(result["video"]["url"])).content
        return handle, events, result, video

    _handle, events, result, video = run(go())
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Queued" and kinds[-1] == "Completed" and "InProgress" in kinds
    assert any(e.logs for e in events if isinstance(e, fal_client.InProgress))
    assert events[-1].metrics["inference_time"] == pytest.approx(emulator.config.latency.inference_seconds)
    assert result["video"]["content_type"] == "video/mp4"
    assert result["video"]["file_size"] == len(video)
    path = tmp_path / "out.mp4"
    path.write_bytes(video)
    probe = probe_video(path)
    assert (probe.width, probe.height, probe.fps) == (1366, 768, 25.0)
    assert probe.duration_seconds == pytest.approx(6.0, abs=0.05)
    assert emulator.stats()["submissions"] == 1


def test_ten_second_portrait_output_keeps_aspect(emulator, tmp_path):
    async def go():
        client = fal_client.AsyncClient(key="k")
        handle = await client.submit(ENDPOINT_ID, {"prompt": "p", "image_url": data_uri((400, 800)), "duration": "10"})
        return await handle.get(interval=0.1)

    result = run(go())
    path = tmp_path / "v.mp4"
    path.write_bytes(httpx.get(result["video"]["url"]).content)
    probe = probe_video(path)
    assert (probe.width, probe.height) == (768, 1536)
    assert probe.frames == 250


def test_invalid_input_answers_422_with_fal_details(emulator):
    async def go():
        client = fal_client.AsyncClient(key="k")
        await client.submit(ENDPOINT_ID, {"prompt": "x" * 2001, "image_url": data_uri((200, 200)), "duration": "7"})

    with pytest.raises(fal_client.FalClientHTTPError) as caught:
        run(go())
    assert caught.value.status_code == 422
    fields = {tuple(d["loc"]): d["type"] for d in caught.value.message}
    assert fields == {
        ("body", "prompt"): "string_too_long",
        ("body", "duration"): "literal_error",
        ("body", "image_url"): "image_load_error",
    }
    assert emulator.stats()["submissions"] == 0


def test_cancel_in_queue_then_already_completed(emulator):
    emulator.configure({"latency": {"queue_seconds": 30}})

    async def go():
        client = fal_client.AsyncClient(key="k")
        handle = await client.submit(ENDPOINT_ID, {"prompt": "p", "image_url": data_uri()})
        await handle.cancel()
        status = await handle.status()
        with pytest.raises(fal_client.FalClientHTTPError) as again:
            await handle.cancel()
        return handle, status, again.value

    handle, status, again = run(go())
    assert isinstance(status, fal_client.Completed) and status.error_type == "request_cancelled"
    assert again.status_code == 400
    assert emulator.stats()["cancelled"] == [handle.request_id]


def test_completed_with_error_and_model_error_at_result_url(emulator):
    emulator.configure(
        {
            "faults": {
                "job_errors": [{"error": "Runner disconnected", "error_type": "runner_disconnected", "status": 503}]
            }
        }
    )

    async def go():
        client = fal_client.AsyncClient(key="k")
        handle = await client.submit(ENDPOINT_ID, {"prompt": "p", "image_url": data_uri()})
        status = [event async for event in handle.iter_events(interval=0.1)][-1]
        with pytest.raises(fal_client.FalClientHTTPError) as caught:
            await handle.get()
        return status, caught.value

    status, error = run(go())
    assert status.error == "Runner disconnected" and status.error_type == "runner_disconnected"
    assert error.status_code == 503 and error.error_type == "runner_disconnected"


def test_results_expire(emulator):
    emulator.configure({"result_ttl_seconds": -1.0, "large_result_ttl_seconds": -1.0})

    async def go():
        client = fal_client.AsyncClient(key="k")
        handle = await client.submit(ENDPOINT_ID, {"prompt": "p", "image_url": data_uri()})
        async for _ in handle.iter_events(interval=0.1):
            pass
        with pytest.raises(fal_client.FalClientHTTPError) as caught:
            await handle.get()
        return caught.value

    assert run(go()).status_code == 404


def test_requires_a_key_and_counts_submissions_per_body(emulator, emulator_server):
    response = httpx.post(f"{emulator_server.url}/{ENDPOINT_ID}", json={"prompt": "p"})
    assert response.status_code == 401
    body = {"prompt": "same", "image_url": data_uri()}

    async def go():
        client = fal_client.AsyncClient(key="k")
        for _ in range(2):
            await client.submit(ENDPOINT_ID, body)

    run(go())
    assert httpx.get(f"{emulator_server.url}/_emulator/stats").status_code == 401  # control needs the token
    headers = {"x-emulator-admin": emulator_server.admin_token}
    stats = httpx.get(f"{emulator_server.url}/_emulator/stats", headers=headers).json()
    assert stats["submissions"] == 2
    assert list(stats["submissions_by_body"].values()) == [2]
