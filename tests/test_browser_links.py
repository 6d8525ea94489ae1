"""Links that reproduce, in Debian's Chromium against `streamlit run app.py`: a settings link opened in a fresh
browser context puts every setting of the link in the form; a link with one bad value names that value and the
others apply; the address follows the form as it changes, with no rerun of its own; Copy link copies it; Back
steps back through the settings; the Runs page opens a run's settings in Train and links to the run itself.

How each kind of widget shows its value: a select in its combobox's field, a slider (the stops and the layer
widths too) in its range input's aria-valuetext, a number in its box.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlparse

import pytest

from core import links
from core.config import SETTINGS_BY_NAME, TrainConfig, config_from_preset
from tests.browser_support import IDLE, SIDEBAR, choose, running_app, type_into
from tests.factories import make_run

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

WAIT_MS = 60_000
SHOTS = Path("/tmp/shots")
# Every setting that a link can set from this page away from its default (the data path needs the server's
# files, which the app offers on loopback only: tests/test_links.py reads it back).
LINKED = TrainConfig(hidden_units=[256, 64, 32], activation="tanh", dropout_rate=0.2, augment=True, optimizer="rmsprop",
                     learning_rate=0.003, batch_size=128, steps=500, eval_every=50, seed=7, dataset="fashion_mnist",
                     source="offline", xla=False, distribute="mirrored", cpu_replicas=4)
NOTICE = '[data-testid="stAlertContentWarning"]'


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Two finished runs, folders written through the run store (nothing trains in these tests); the article's
    has a placeholder model, so that the Runs page selects it when it opens without ?run=."""
    directory = tmp_path_factory.mktemp("runs")
    make_run(directory, config_from_preset("cnn", steps=300, source="offline"))
    make_run(directory, TrainConfig(), model=True)  # the newest with a model: the Runs page selects it on arrival
    return directory


@pytest.fixture(scope="module")
def app_url(runs_dir):
    with running_app(runs_dir) as url:
        yield url


@pytest.fixture
def context(browser, app_url):
    """A fresh browser context (no cookies, no session: a link opened by someone else) that may use the clipboard."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
    context.set_default_timeout(WAIT_MS)
    yield context
    context.close()


def open_train(context, app_url: str, query: dict[str, str]):
    page = context.new_page()
    page.goto(f"{app_url}/Train" + (f"?{urlencode(query)}" if query else ""))
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    page.locator(IDLE).wait_for()
    return page


def displayed(name: str, value) -> dict[str, str]:
    """What the form shows for a setting's value: widget label -> the text it shows."""
    setting = SETTINGS_BY_NAME[name]
    if setting.widget == "layers":
        return {setting.label: str(len(value)), **{f"Units, layer {index}": str(units)
                                                  for index, units in enumerate(value, start=1)}}
    if setting.widget == "stops":
        return {setting.label + (" (log scale)" if setting.log_scale else ""): f"{value:g}"}
    if setting.widget == "slider":
        return {setting.label: f"{value:.2f}"}
    if setting.choices:
        return {setting.label: setting.choice_labels.get(value, str(value))}
    return {setting.label: str(value)}


def shown(page, label: str) -> str:
    """The value a widget of the sidebar's form shows, found by its label."""
    sidebar = page.locator(SIDEBAR)
    slider = sidebar.locator(f'input[type="range"][aria-label="{label}"]')
    # A widget's code loads after the script has run (a grey placeholder until then): wait for it.
    slider.or_(sidebar.get_by_label(label, exact=True)).first.wait_for()
    if slider.count():
        return slider.get_attribute("aria-valuetext")
    combobox = sidebar.get_by_role("combobox", name=label, exact=True)
    if combobox.count():
        return combobox.input_value()
    return sidebar.get_by_label(label, exact=True).input_value()


def assert_form_shows(page, config: TrainConfig, names) -> None:
    for name in names:
        for label, text in displayed(name, getattr(config, name)).items():
            assert shown(page, label) == text, f"{label}: the form shows {shown(page, label)!r}, the link {text!r}"


def address(page) -> dict[str, str]:
    return dict(parse_qsl(urlparse(page.url).query))


def screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"links-{name}.png"), full_page=True)


def test_a_settings_link_in_a_fresh_context_puts_every_setting_in_the_form(context, app_url):
    query = links.settings_query(LINKED)
    # All but the defaults, and the settings that name something of one person's (an upload, a run to start
    # from, a snapshot of kept drawings), which a fresh context does not have.
    personal = {"upload", "init_from", "collection", "collection_share"}
    assert set(query) == set(SETTINGS_BY_NAME) - {"architecture", "engine", "data_path"} - personal
    page = open_train(context, app_url, query)
    screenshot(page, "opened")

    assert_form_shows(page, LINKED, query)
    assert page.locator(NOTICE).count() == 0
    assert page.get_by_text("784-256-64-32-10 · tanh · rmsprop at learning rate 0.003").is_visible()
    assert address(page) == query


def test_a_link_with_one_bad_value_names_it_and_the_others_apply(context, app_url):
    query = {**links.settings_query(LINKED), "steps": "abc"}
    page = open_train(context, app_url, query)
    screenshot(page, "bad-value")

    notice = page.locator(NOTICE)
    named = "Steps: 'abc' is not a whole number written with the digits 0 to 9, such as 1000, so it stays at 1,000."
    expect(notice).to_contain_text(named, timeout=WAIT_MS)
    assert notice.get_by_role("listitem").count() == 1
    assert_form_shows(page, LINKED, [name for name in query if name != "steps"])
    assert shown(page, "Steps") == "1000"
    assert page.get_by_role("button", name="Train", exact=True).is_enabled()


def test_the_address_follows_the_form_with_no_rerun_of_its_own(context, app_url):
    frames = []  # what the browser sends the server: each rerun it asks for is one message
    page = context.new_page()
    page.on("websocket", lambda socket: socket.on("framesent", lambda payload: frames.append(payload)))
    page.goto(f"{app_url}/Train")
    page.locator(IDLE).wait_for()
    page.wait_for_timeout(1000)  # let the first run's messages settle
    before = len(frames)

    type_into(page, "Steps", "2000", within=SIDEBAR)
    page.wait_for_url(re.compile(r"[?&]steps=2000"))
    page.locator(IDLE).wait_for()
    page.wait_for_timeout(1500)  # room for a second rerun, were the new address to ask for one

    assert len(frames) - before == 1  # the one the changed box asked for
    assert shown(page, "Steps") == "2000"
    choose(page, "Optimizer", "Adam", within=SIDEBAR)
    page.wait_for_url(re.compile(r"optimizer=adam"))
    assert address(page) == {"steps": "2000", "optimizer": "adam"}
    assert (shown(page, "Steps"), shown(page, "Optimizer")) == ("2000", "Adam")


def test_copy_link_copies_the_settings_and_back_steps_back_through_them(context, app_url):
    page = open_train(context, app_url, {"learning_rate": "0.1"})
    type_into(page, "Steps", "300", within=SIDEBAR)
    page.wait_for_url(re.compile(r"steps=300"))

    page.locator(SIDEBAR).get_by_role("button", name="Copy a link to these settings").click()
    expect(page.locator(SIDEBAR).get_by_role("button", name="Link copied")).to_be_visible(timeout=WAIT_MS)
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"{app_url}/Train?learning_rate=0.1&steps=300"

    page.go_back()
    page.wait_for_url(re.compile(r"Train\?learning_rate=0\.1$"))
    page.locator(IDLE).wait_for()
    expect(page.locator(SIDEBAR).get_by_label("Steps", exact=True)).to_have_value("1000", timeout=WAIT_MS)
    assert shown(page, "Learning rate (log scale)") == "0.1"


def test_a_runs_own_link_opens_the_runs_page_on_it_and_its_settings_open_in_train(context, app_url, runs_dir):
    from core.store import list_runs

    cnn = next(run for run in list_runs(runs_dir) if run.config.architecture == "cnn")
    page = context.new_page()
    page.goto(f"{app_url}/Runs?run={cnn.run_id}")  # a fresh session, by the run's own link
    page.get_by_role("heading", name=f"Run {cnn.run_id}").wait_for()
    page.locator(IDLE).wait_for()
    page.get_by_role("button", name="Copy link to this run").click()
    assert page.evaluate("navigator.clipboard.readText()") == f"{app_url}/Runs?run={cnn.run_id}"

    page.get_by_role("link", name="Open these settings in Train").click()
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    page.wait_for_url(re.compile(r"architecture=cnn"))
    page.locator(IDLE).wait_for()
    assert_form_shows(page, cnn.config, links.settings_query(cnn.config))
    assert address(page) == links.settings_query(cnn.config)


def test_open_these_settings_replaces_a_form_that_holds_others_in_the_same_session(context, app_url, runs_dir):
    page = open_train(context, app_url, {"optimizer": "adam"})
    type_into(page, "Steps", "2000", within=SIDEBAR)
    page.wait_for_url(re.compile(r"steps=2000"))

    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Runs").click()  # within the session
    page.get_by_role("heading", name="Runs", exact=True).wait_for()
    article = page.get_by_role("link", name="Open these settings in Train")  # the newest run with a model
    expect(article).to_have_attribute("href", re.compile(r"Train\?preset=article$"), timeout=WAIT_MS)
    article.click()
    page.get_by_role("heading", name="Train", exact=True).wait_for()
    page.locator(IDLE).wait_for()

    expect(page.locator(SIDEBAR).get_by_label("Steps", exact=True)).to_have_value("1000", timeout=WAIT_MS)
    assert shown(page, "Optimizer") == "SGD (the article's)"
    page.wait_for_url(re.compile(r"/Train$"))  # the article's settings: nothing differs from the defaults


def test_what_a_link_gives_is_shown_as_written_never_as_markdown(context, app_url):
    """A link is anyone's: what it gives is text on this page, never a link, an image or a colour of its own."""
    page = open_train(context, app_url, {"steps": "[press here](https://example.com)",
                                         "see_![x](http://example.com/x.png)": ":red[alarm] mail@example.com"})

    notice = page.locator(NOTICE)
    expect(notice).to_contain_text("is not a whole number", timeout=WAIT_MS)
    shown_text = notice.inner_text().replace("\u2060", "")  # the word joiners that keep bare addresses text
    assert "Steps: '[press here](https://example.com)' is not a whole number" in shown_text
    assert "=:red[alarm] mail@example.com" in shown_text
    assert notice.locator("a, img").count() == 0
