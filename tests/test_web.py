"""The web page of ``openmora serve`` in a real headless chromium (Playwright driving the system's chromium): a real
server with a token (tiny profile, no LLM), the page logs in, shows a request's plan and estimate, submits it,
watches its events, plays the video, revises it, lists and reopens jobs, cancels one, and shows a prompt that looks
like HTML as text."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "openmora" / "server" / "static"
TOKEN = "web-test-token"
NO_CHROMIUM = "chromium is not installed: run .ci/ensure-chromium (apt-get install chromium) to run the browser test"
XSS = "<img src=x onerror=alert(1)>"


def _chromium() -> str:
    """The system chromium, installed with apt-get (through .ci/ensure-chromium) when it is missing and allowed."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["sh", str(ROOT / ".ci" / "ensure-chromium")], check=False, timeout=600)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip(NO_CHROMIUM)
    return found


def _until(page: Any, js: str, arg: Any = None, timeout: float = 20.0) -> Any:
    """Poll ``js`` (a function of ``arg``) in the page until it returns something truthy. Playwright's own
    ``wait_for_function`` compiles its predicate with eval, which the page's Content-Security-Policy forbids."""
    end = time.monotonic() + timeout
    while True:
        value = page.evaluate(js, arg)
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"still false after {timeout} s: {js}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real ``openmora serve`` on a free loopback port, with a token; yields its base URL."""
    port, log = _free_port(), tmp_path / "server.log"
    env = dict(os.environ, OPENMORA_TORCH_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "openmora", "serve", "--port", str(port), "--data", str(tmp_path / "data")]
    cmd += ["--profile", "tiny", "--llm", "none", "--token", TOKEN]
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < end, "the server did not start in 60 s: " + log.read_text()[-2000:]
            try:
                if httpx.get(f"{base}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.unit
def test_the_page_and_its_assets_load_nothing_from_another_origin() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text, re.I), name
    js = (STATIC / "app.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


@pytest.mark.integration
def test_plan_login_and_the_public_paths(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from openmora.server import create_app
    from openmora.server.web import SESSION_COOKIE

    app = create_app(tmp_path / "data", token=TOKEN, start_worker=False)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.text.startswith("<!doctype html>")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        for method, path in (("GET", "/jobs"), ("POST", "/plan"), ("GET", "/static/other.js"), ("POST", "/logout")):
            assert client.request(method, path).status_code == 401, path
        assert client.post("/login", json={"token": "nope"}).status_code == 401
        assert client.post("/login", json={"tok": TOKEN}).json()["error"].startswith("send JSON like")

        ok = client.post("/login", json={"token": TOKEN})
        cookie = ok.cookies[SESSION_COOKIE]
        assert ok.status_code == 200 and TOKEN not in cookie
        set_cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "secure" not in set_cookie
        assert client.get("/jobs").json() == {"jobs": []}  # the cookie alone

        # three segments: image_to_video's clip, then two more from extend_video
        plan = client.post("/plan", json={"request": "a red kite over the sea", "segments": 3}).json()
        assert [s["tool"] for s in plan["steps"]][-1] == "extend_video" and plan["steps"][-1]["args"]["segments"] == 2
        assert plan["source"] == "template" and plan["task"] == "auto" and plan["estimate_s"] > 0
        more = client.post("/plan", json={"request": "a red kite over the sea", "segments": 3, "best_of": 3}).json()
        assert more["estimate_s"] > plan["estimate_s"]  # three takes of each rendering step
        form = client.post("/plan", data={"request": "wake it up", "task": "image-to-video", "image": "true"}).json()
        assert [s["tool"] for s in form["steps"]] == ["enhance_prompt", "image_to_video"]
        assert form["steps"][1]["args"]["image_id"] == "$image"
        for body, words in (
            ({"task": "image-to-video", "request": "x"}, "image"),
            ({"request": "x", "task": "juggle"}, "unknown task"),
            ({"request": "x", "videos": 3}, "videos must be a whole number from 0 to 2"),
            ({"request": "x", "image": "maybe"}, "image must be true or false"),
            ({"request": "x", "best_of": 0}, "best_of"),
            ({"task": "edit", "request": "darker", "videos": 1}, "give segments"),
        ):
            r = client.post("/plan", json=body)
            assert r.status_code == 400 and words in r.json()["error"], (body, r.json())
        assert client.post("/plan", content=b"[1]", headers={"Content-Type": "application/json"}).status_code == 400
        assert not any((tmp_path / "data" / "jobs").iterdir())  # planning makes no run folder

        client.post("/logout")
        client.cookies.clear()
        assert client.get("/jobs").status_code == 401
        assert client.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


@pytest.mark.slow
def test_the_page_plans_submits_watches_plays_revises_lists_and_escapes(server: str) -> None:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    # the token guards the data; the page itself loads without it
    assert httpx.get(f"{server}/jobs").status_code == 401
    assert httpx.get(f"{server}/").headers["content-security-policy"].startswith("default-src 'self'")

    dialogs: list[str] = []
    errors: list[str] = []
    elsewhere: list[str] = []
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # chromium refuses root else
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)

            def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            def route(r: Any) -> None:
                if r.request.url.startswith(server) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    elsewhere.append(r.request.url)
                    r.abort()

            page.on("dialog", on_dialog)
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.route("**/*", route)
            page.goto(f"{server}/")

            # log in: the page asked for the token (GET /jobs said 401); a wrong one is refused in words
            page.wait_for_selector("#login:not([hidden])")
            page.fill("#token", "wrong")
            page.click("#login-form button")
            _until(page, "() => document.getElementById('login-error').textContent.includes('wrong token')")
            page.fill("#token", TOKEN)
            page.click("#login-form button")
            page.wait_for_selector("#login", state="hidden")

            # the plan and its estimate, before submitting
            page.fill("#request", "a red kite over the sea")
            assert page.input_value("#task") == "auto"
            page.click("#plan-button")
            head = page.wait_for_selector(".plan-head").text_content() or ""
            assert re.fullmatch(r"Plan \(template, 4 steps\), estimate \d+\.\d s", head), head
            steps = page.locator(".plan-steps li").all_text_contents()
            assert [s.split(" (")[0] for s in steps] == [
                "prompt_agent: enhance_prompt",
                "image_agent: text_to_image",
                "video_agent: image_to_video",
                "video_agent: extend_video",
            ]

            # submit, watch it run: status, transcript lines, progress, previews, then the video and the report
            page.click("#submit")
            _until(page, "() => document.getElementById('job-status').textContent === 'done'", timeout=60)
            job_id = api.get("/jobs").json()["jobs"][0]["id"]
            assert page.text_content("#job-title") == f"a red kite over the sea ({job_id})"
            lines = page.locator("#transcript li").all_text_contents()
            assert "image_agent: text_to_image -> img-0001" in lines, lines
            assert "video_agent: extend_video -> clip-0002" in lines, lines
            assert page.eval_on_selector("#progress", "p => [p.value, p.max]")[1] > 1
            previews = page.locator("#previews img").evaluate_all("imgs => imgs.map(i => i.alt)")
            assert previews == ["img-0001 (text_to_image)", "clip-0001 (image_to_video)", "clip-0002 (extend_video)"]
            _until(page, "() => document.getElementById('video').readyState >= 1", timeout=15)
            first = page.eval_on_selector("#video", "v => [v.currentSrc, v.duration]")
            assert first[0].startswith(f"{server}/jobs/{job_id}/final.mp4") and first[1] > 0
            report = page.get_attribute("#report", "href")
            assert report == f"/jobs/{job_id}/files/report.html" and page.is_visible("#report")
            # the session cookie is what lets the page fetch it (no Authorization header)
            got = page.request.get(f"{server}{report}")
            assert got.status == 200 and got.text().lstrip().lower().startswith("<!doctype html")
            assert page.is_hidden("#cancel")

            # revise: a longer video at the same URL, new source
            page.fill("#revise-text", "extend it by two seconds")
            page.click("#revise")
            _until(
                page,
                "src => { const v = document.getElementById('video'); return v.currentSrc !== src && "
                "v.readyState >= 1 && isFinite(v.duration) && document.getElementById('job-status').textContent === 'done'; }",
                first[0],
                timeout=60,
            )
            second = page.eval_on_selector("#video", "v => v.duration")
            assert second > first[1]
            assert [s["kind"] for s in api.get(f"/jobs/{job_id}").json()["steps"]] == ["start", "revise"]
            assert page.locator(".bubble.user").all_text_contents()[-1] == "extend it by two seconds"

            # the sidebar lists it; the header still works next to the cookie
            _until(
                page,
                "() => document.querySelector('#jobs .job-item .job-prompt')?.textContent === 'a red kite over the sea'",
            )
            assert page.text_content("#jobs .job-item .job-status") == "done"

            # a prompt that looks like HTML is shown as text everywhere; the job is cancelled while queued
            assert api.post("/queue/pause").json()["paused"] is True
            page.click("#new-request")
            page.fill("#request", XSS)
            page.select_option("#task", "text-to-video")
            page.click("#submit")
            _until(page, "t => document.getElementById('job-title').textContent.startsWith(t)", XSS)
            _until(page, "t => document.querySelector('#jobs .job-prompt')?.textContent === t", XSS, timeout=10)
            assert XSS in page.locator(".bubble.user").all_text_contents()
            assert page.eval_on_selector_all("img[src='x']", "imgs => imgs.length") == 0
            assert page.is_visible("#cancel")
            page.click("#cancel")
            _until(page, "() => document.getElementById('job-status').textContent === 'cancelled'")
            assert api.post("/queue/resume").json()["paused"] is False

            # reopen the first job from the list: its request, revision, previews and video come back
            page.click(f"#jobs .job-item[data-id='{job_id}'] button")
            _until(page, "() => document.getElementById('video').readyState >= 1", timeout=15)
            assert page.locator(".bubble.user").all_text_contents() == [
                "a red kite over the sea",
                "extend it by two seconds",
            ]
            _until(page, "() => document.querySelectorAll('#previews img').length >= 4")
            assert page.text_content("#job-status") == "done"

            # a bad request's error is shown as text, too
            page.click("#new-request")
            page.fill("#request", "")
            page.select_option("#task", "extend")
            page.click("#plan-button")
            error = page.wait_for_selector(".bubble.error").text_content() or ""
            assert error.startswith("Error: extend takes one video"), error
        finally:
            browser.close()
    api.close()
    assert dialogs == [] and errors == [] and elsewhere == []
