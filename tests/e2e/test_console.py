"""The operator console in a real browser: Debian's Chromium driven by Playwright, against a
real issuer (``keyherald issuer run``) and two real agents, all in processes of their own.

One issuer, two agents and one browser serve the whole module. The screenshots go to
KEYHERALD_CONSOLE_SCREENSHOTS when set (``docs/console`` refreshes the documentation's),
else to a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keyherald.issuer.kek import generate_kek_text
from keyherald.shared.connect import sync_client
from keyherald.shared.names import Names
from tests.procs import AgentProcess, Fleet, IssuerProcess, wait_for
from tests.servers import cleanup_namespace, fresh_namespace

from .deployment import Deployment, token_of

pytestmark = pytest.mark.redis

XSS = "<img src=x onerror=alert(1)>"
ADMIN_SCOPE = "keyherald:admin"


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip("no Chromium found at /usr/bin/chromium or on PATH (apt-get install chromium; .ci/run"
                " installs it)", allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402


@dataclass
class Stack:
    d: Deployment
    issuer: IssuerProcess
    agents: list[AgentProcess]
    secrets: dict[str, str]
    shots: Path
    fleet: Fleet

    @property
    def url(self) -> str:
        return self.issuer.url

    def shot(self, page: Page, name: str) -> None:
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def clients(self) -> list[str]:
        code, out, err = self.d.operator("clients", "list", "--json")
        assert code == 0, err
        return [str(c["client_id"]) for c in json.loads(out)]


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    namespace = fresh_namespace("console")
    root = tmp_path_factory.mktemp("console")
    shots = Path(os.environ.get("KEYHERALD_CONSOLE_SCREENSHOTS") or root / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    d = Deployment(redis_url, namespace, generate_kek_text(), root, KEYHERALD_AUTH_FAILURES_PER_CLIENT="3")
    fleet = Fleet()
    try:
        d.init()
        issuer = fleet.issuer(d.host("issuer-1"))
        issuer.wait_healthy()
        secrets = {}
        for name in ("ops", "ops-locked"):
            code, out, err = d.operator("clients", "create", name, "--audience", d.issuer, "--scope", ADMIN_SCOPE,
                                        "--json")
            assert code == 0, err
            secrets[name] = json.loads(out)["client_secret"]
        agents = [fleet.agent(d.agent_env(f"host-{n}", KEYHERALD_AGENT_ID=f"inventory-{n}",
                                          KEYHERALD_PRESENCE_INTERVAL="0.5s")) for n in ("a", "b")]
        assert all(a.started for a in agents)
        yield Stack(d, issuer, agents, secrets, shots, fleet)
    finally:
        fleet.close()
        cleanup_namespace(redis_url, namespace)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield found
        finally:
            found.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    found = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    found = context.new_page()
    found.set_default_timeout(10_000)
    dialogs: list[str] = []
    found.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    found.dialogs = dialogs  # type: ignore[attr-defined]
    return found


def sign_in(stack: Stack, page: Page, client_id: str = "ops") -> None:
    page.goto(f"{stack.url}/console/signin")
    page.fill("#client_id", client_id)
    page.fill("#client_secret", stack.secrets[client_id])
    page.click("#signin")
    expect(page.locator("#health-state")).to_have_text("Healthy")


def _live_agents(page: Page) -> list[str]:
    return [t.strip() for t in page.locator("#fleet-live tr:not(.empty) td:first-child").all_inner_texts()]


def test_the_operator_scenario(stack: Stack, page: Page, context: BrowserContext) -> None:
    url = stack.url
    # 1. Sign in: the console sends a stranger to the sign-in page.
    page.goto(f"{url}/console")
    expect(page).to_have_url(f"{url}/console/signin")
    stack.shot(page, "signin")
    sign_in(stack, page)
    expect(page).to_have_url(f"{url}/console")

    # 2. The keys: the signing key, the standby, the time to the next rotation; the fleet, live.
    signing = page.locator("#signing-kid").get_attribute("title")
    assert signing
    expect(page.locator("#next-rotation")).to_have_text(re.compile(r"in (59m|1h)"))
    expect(page.locator(f'tr.key[data-kid="{signing}"] .badge')).to_have_text("signing")
    expect(page.locator("tr.key.published")).to_have_count(1)
    wait_for(lambda: _live_agents(page) == ["inventory-a", "inventory-b"], 10, "both agents on the page")
    expect(page.locator("#fleet .advisory")).to_contain_text("advisory")
    stack.shot(page, "overview")

    # 3. Create a client: its secret shown once, and it works at the token endpoint.
    page.click("nav >> text=Clients")
    page.fill("#client-name", "orders")
    page.fill("#client-audiences", "inventory")
    page.fill("#client-scopes", "inventory:read")
    page.click("#create-client-button")
    secret = page.locator("#secret").inner_text().strip()
    assert secret.startswith("khs_")
    expect(page.locator("#secret-card")).to_contain_text("shown once")
    stack.shot(page, "client-created")
    token = token_of(stack.issuer.token("orders", secret))
    assert all(a.refuses(token) is None for a in stack.agents)

    # 4. Revoke its subject, confirmed first.
    page.click("nav >> text=Revoke")
    page.select_option("#sub", "orders")
    page.click("#revoke-subject-button")
    expect(page.locator("#confirm")).to_contain_text("Every token issued to orders")
    stack.shot(page, "revoke-confirm")
    page.click("#confirm-button")

    # 5. The confirmation reaches both agents, and they refuse the token.
    expect(page.locator("#progress-text")).to_have_text(
        re.compile(r"^Applied by 2 of 2 agents in \d+ ms$"), timeout=15_000)
    stack.shot(page, "revoke-confirmed")
    assert all(a.refuses(token) == "revoked" for a in stack.agents)

    # 6. Emergency rotation: the timeline changes (the old key revoked, the standby signs).
    page.click("nav >> text=Overview")
    standby = page.locator("tr.key.published").get_attribute("data-kid")
    page.click("#emergency-rotate")
    expect(page.locator("#confirm")).to_contain_text(f"Key {signing} is REVOKED now")
    stack.shot(page, "emergency-confirm")
    page.click("#confirm-button")
    expect(page.locator("#done")).to_contain_text("Emergency rotation done")
    expect(page.locator("#signing-kid")).to_have_attribute("title", standby or "")
    expect(page.locator(f'tr.key[data-kid="{signing}"] .badge')).to_have_text("revoked")
    expect(page.locator("tr.key.published")).to_have_count(1)
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"^Applied by 2 of 2 agents"), timeout=15_000)
    stack.shot(page, "after-emergency")
    page.click("nav >> text=Events")
    page.select_option("#event-type", "subject.revoked")
    page.click("#filter")
    expect(page.locator("table.events tbody")).to_contain_text("subject orders")
    page.select_option("#event-type", "")
    page.click("#filter")
    expect(page.locator("table.events tbody")).to_contain_text("key.revoked")
    stack.shot(page, "events")

    # 7. Sign out: every page is refused, in the browser and to the old cookie replayed.
    old = {c["name"]: c["value"] for c in context.cookies()}
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value")
    page.click("#signout")
    expect(page).to_have_url(f"{url}/console/signin")
    for path in ("/console", "/console/revoke", "/console/clients", "/console/events"):
        page.goto(f"{url}{path}")
        expect(page).to_have_url(f"{url}/console/signin")
        expect(page.locator("#signout")).to_have_count(0)
    with httpx.Client(base_url=url, cookies=old, headers={"Origin": url}) as replay:
        for path in ("/console", "/console/clients", "/console/events"):
            answer = replay.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/console/signin"
        assert replay.get("/console/api/live").status_code == 401
        answer = replay.post("/console/revoke/subject", data={"csrf": csrf or "", "sub": "ops", "confirmed": "yes"})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/signin"
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_an_agent_that_does_not_confirm_is_named(stack: Stack, page: Page) -> None:
    """Frozen (SIGSTOP) when the revocation goes out: the bar waits, naming it, and fills once it
    thaws. Its presence interval is long, so it stays awaited while frozen (a record lasts 6
    intervals), as an agent in production would."""
    frozen = stack.fleet.agent(stack.d.agent_env("host-c", KEYHERALD_AGENT_ID="inventory-frozen",
                                                 KEYHERALD_PRESENCE_INTERVAL="5s"))
    assert frozen.started
    try:
        sign_in(stack, page)
        wait_for(lambda: "inventory-frozen" in _live_agents(page), 10, "the third agent on the page")
        frozen.pause()
        page.click("nav >> text=Revoke")
        page.fill("#other-sub", "billing")
        page.click("#revoke-subject-button")
        page.click("#confirm-button")
        expect(page.locator("#progress-text")).to_have_text(re.compile(r"^Waiting: 2 of 3 agents hold seq \d+"))
        expect(page.locator("#progress-missing")).to_contain_text("inventory-frozen at seq")
        expect(page.locator("#progress-missing li")).to_have_count(1)
        stack.shot(page, "revoke-waiting")
        frozen.resume()
        expect(page.locator("#progress-text")).to_have_text(re.compile(r"^Applied by 3 of 3 agents in \d+ ms$"),
                                                            timeout=15_000)
    finally:
        frozen.stop()  # a clean stop removes its record: the fleet is two agents again


def test_attacker_influenced_values_render_as_text(stack: Stack, page: Page) -> None:
    """Client names, audiences, subjects and agent ids come from users and from Redis."""
    names = Names(stack.d.namespace)
    with sync_client(stack.d.redis_url) as redis:
        # Someone who can write Redis fakes an agent named like markup.
        record = {"agent_id": XSS, "audience": [XSS], "log": "", "seq": 0, "interval": 5.0, "connected": True,
                  "stale": False, "refusing": False}
        redis.set(names.presence(XSS), json.dumps(record), ex=30)
        redis.zadd(names.presence_index, {XSS: 1})
        try:
            sign_in(stack, page)
            expect(page.locator("#fleet-live")).to_contain_text(XSS)
            page.click("nav >> text=Clients")
            page.fill("#client-name", XSS)
            page.fill("#client-audiences", "inventory")
            page.click("#create-client-button")
            expect(page.locator("#clients-error")).to_contain_text(f"Cannot create client “{XSS}”")
            expect(page.locator("#client-name")).to_have_value(XSS)
            page.fill("#client-name", "markup-audience")
            page.fill("#client-audiences", "<img/src=x/onerror=alert(2)>")
            page.click("#create-client-button")
            page.click("text=Done")
            expect(page.locator('tr[data-client="markup-audience"]')).to_contain_text("<img/src=x/onerror=alert(2)>")
            page.click("nav >> text=Revoke")
            page.fill("#other-sub", XSS)
            page.click("#revoke-subject-button")
            expect(page.locator("#confirm h1")).to_have_text("Revoke an UNKNOWN subject?")
            expect(page.locator("#confirm")).to_contain_text(f"No registered client is named {XSS}")
            page.click("#confirm-button")
            page.click("nav >> text=Events")
            expect(page.locator("table.events tbody")).to_contain_text(f"subject {XSS}")
            stack.shot(page, "xss-as-text")
            page.click("nav >> text=Overview")
            expect(page.locator("#fleet-live")).to_contain_text(XSS)
            page.locator("#fleet").screenshot(path=str(stack.shots / "fleet-fake-presence.png"))
            assert page.locator("img").count() == 0
            assert page.dialogs == []  # type: ignore[attr-defined]
        finally:
            redis.delete(names.presence(XSS))
            redis.zrem(names.presence_index, XSS)


def test_a_forged_cross_site_post_is_refused(stack: Stack, page: Page, context: BrowserContext) -> None:
    sign_in(stack, page)
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value") or ""
    # Another site's page posts a form to the console in the signed-in browser.
    forged = (f'<form id="f" method="post" action="{stack.url}/console/clients">'
              '<input name="name" value="forged"><input name="audiences" value="inventory"></form>'
              '<script>document.getElementById("f").submit()</script>')
    context.route("http://attacker.test/**", lambda route: route.fulfill(body=forged, content_type="text/html"))
    page.goto("http://attacker.test/")
    page.wait_for_url(re.compile(re.escape(stack.url) + r"/console/signin"))  # SameSite=Strict: no cookie went
    assert "forged" not in stack.clients()
    # The cookie itself, replayed: another origin, or no CSRF token, changes nothing.
    cookies = {c["name"]: c["value"] for c in context.cookies() if c["domain"] == "127.0.0.1"}
    form = {"name": "forged", "audiences": "inventory"}
    with httpx.Client(base_url=stack.url, cookies=cookies) as client:
        answer = client.post("/console/clients", data={**form, "csrf": csrf},
                             headers={"Origin": "http://attacker.test"})
        assert answer.status_code == 403 and "another site" in answer.text
        answer = client.post("/console/clients", data=form, headers={"Origin": stack.url})
        assert answer.status_code == 403 and "CSRF" in answer.text
        answer = client.post("/console/clients", data={**form, "csrf": csrf})  # no Origin, no Sec-Fetch-Site
        assert answer.status_code == 403
    assert "forged" not in stack.clients()
    # The real page, in the real browser, does it (so the refusals above were the checks).
    page.goto(f"{stack.url}/console/clients")
    page.fill("#client-name", "made-here")
    page.fill("#client-audiences", "inventory")
    page.click("#create-client-button")
    expect(page.locator("#secret-card")).to_contain_text("made-here")


def _sign_in_form(page: Page, client_id: str, secret: str) -> str:
    page.fill("#client_id", client_id)
    page.fill("#client_secret", secret)
    page.click("#signin")
    return page.locator("#signin-error").inner_text() if page.locator("#signin-error").count() else ""


def test_a_wrong_secret_is_refused_then_rate_limited(stack: Stack, page: Page) -> None:
    """KEYHERALD_AUTH_FAILURES_PER_CLIENT=3 per minute, counted in fixed windows as at the token
    endpoint: failures are refused alike until the limit, then even the right secret is, until
    the window ends. (Should the minute turn between the two, the window starts afresh: so
    once more.)"""
    page.goto(f"{stack.url}/console/signin")
    for _ in range(2):
        failures = 0
        while "Too many failed sign-ins" not in (said := _sign_in_form(page, "ops-locked", "khs_wrong")):
            assert said.startswith("Sign-in failed: wrong client ID or secret")
            failures += 1
            assert failures <= 3
        said = _sign_in_form(page, "ops-locked", stack.secrets["ops-locked"])
        if "Too many failed sign-ins" in said:
            break
        page.goto(f"{stack.url}/console/signin")
    else:
        raise AssertionError("the right secret was let in right after the limit was reached, twice")
    assert page.locator("#signout").count() == 0
    stack.shot(page, "signin-rate-limited")
    answer = httpx.post(f"{stack.url}/console/signin", data={"client_id": "ops-locked", "client_secret": "x"},
                        headers={"Origin": stack.url})
    assert answer.status_code == 429
