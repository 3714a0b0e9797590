"""The chat page of `ktx serve --web` in headless Chromium (Debian's `chromium`, which the nox
session installs): it sends a message and shows the streamed answer with its speed, stops an
answer midway, and never turns model output into HTML."""

from __future__ import annotations

import shutil

import pytest
from live_server import start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(demo_gguf):
    if CHROMIUM is None:
        pytest.fail("the web UI test needs Chromium: apt-get install chromium (nox -s tests installs it)")
    from playwright.sync_api import sync_playwright

    srv = start_server("--web", "--max-new-tokens", "48")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{srv.url}/web/")
        page.get_by_text("Settings").click()  # open the settings panel
        page.srv = srv
        yield page
        browser.close()
    srv.stop()


def test_a_message_gets_a_streamed_answer_with_its_speed(page):
    from playwright.sync_api import expect

    expect(page.get_by_label("Model")).to_have_value(page.srv.engine.model_name)
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Message").fill("Write one sentence about the sea.")
    page.get_by_role("button", name="Send").click()
    answer = page.locator('[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-done", "true", timeout=120_000)
    assert answer.locator(".stats").inner_text().split(" tokens")[0] == "24"
    assert "tok/s" in answer.locator(".stats").inner_text()
    text = answer.inner_text()
    assert len(text.split("\n")[0]) > 0
    # the conversation is listed and kept across a reload
    expect(page.locator("#conversations li")).to_have_count(1)
    page.reload()
    expect(page.locator('[data-role="assistant"]')).to_have_count(1)
    page.get_by_text("Settings").click()


def test_stop_ends_an_answer_midway(page):
    from playwright.sync_api import expect

    page.locator("#new-chat").click()
    page.get_by_label("Max tokens").fill("400")
    page.get_by_label("Message").fill("Tell me a very long story.")
    page.get_by_role("button", name="Send").click()
    answer = page.locator('[data-role="assistant"]').last
    expect(answer).not_to_have_text("", timeout=120_000)  # some of it has streamed
    page.get_by_role("button", name="Stop").click()
    expect(answer).to_have_attribute("data-done", "true", timeout=30_000)
    stats = answer.locator(".stats").inner_text()
    assert "stopped" in stats and int(stats.split(" tokens")[0]) < 400
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    page.srv.wait_idle()  # the server saw the client go and freed the request's blocks
    assert page.srv.engine.stats()["kv_blocks_in_requests"] == 0


def test_model_output_is_never_html(page):
    made = page.evaluate(
        """() => {
            const box = document.createElement("div");
            box.append(window.ktxRenderMarkdown(
                "<img src=x onerror=alert(1)> **bold** [x](javascript:alert(1))\\n```html\\n<b>hi</b>\\n```"
            ));
            return {
                imgs: box.querySelectorAll("img").length,
                bs: box.querySelectorAll("b").length,
                links: box.querySelectorAll("a").length,
                strong: box.querySelector("strong")?.textContent,
                text: box.textContent,
            };
        }"""
    )
    assert made["imgs"] == 0 and made["bs"] == 0 and made["links"] == 0  # no javascript: link either
    assert made["strong"] == "bold"
    assert "<img src=x onerror=alert(1)>" in made["text"] and "<b>hi</b>" in made["text"]


def test_a_newcomer_sees_what_to_do_and_a_narrow_window_works(page):
    import json

    import httpx
    from playwright.sync_api import expect

    page.locator("#new-chat").click()
    expect(page.locator("#messages .empty")).to_contain_text("Enter sends")  # the empty state
    assert httpx.get(f"{page.srv.url}/favicon.ico", follow_redirects=True).status_code == 200
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("/web/favicon.svg")

    page.set_viewport_size({"width": 400, "height": 800})
    for box in (page.locator("#messages").bounding_box(), page.locator("#composer").bounding_box()):
        assert box["x"] >= 0 and box["x"] + box["width"] <= 400 and box["width"] > 300  # full width
    page.set_viewport_size({"width": 1280, "height": 800})

    page.get_by_label("System prompt").fill("Answer in French.")
    page.get_by_label("Max tokens").fill("8")
    page.get_by_label("Message").fill("Hello")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.get_by_role("button", name="Send").click()
    messages = json.loads(sent.value.post_data)["messages"]
    assert messages[0] == {"role": "system", "content": "Answer in French."}
    answer = page.locator('[data-role="assistant"]').last
    expect(answer).to_have_attribute("data-done", "true", timeout=120_000)
    first = answer.locator(":scope > *").first.inner_text()
    assert first == first.lstrip()  # no blank line opening the answer
    page.get_by_label("System prompt").fill("")
