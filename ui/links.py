"""Links that reproduce: the Train page's address holds its settings and its sweep (core/links.py says how), is
read when the page opens and kept up to date as they change; a button copies it; the Runs page links a run's
settings to the Train page.

When is an address a link to open rather than the page's own record of its form? When the page has just been
opened: in a fresh session (a reload, a shared link), from another page (a link on the Runs page), or by the
browser's Back and Forward. Reading it on every rerun instead would race the browser: a widget changed while
the previous run's new address is still on its way comes back with the older address, which would undo the
change. Streamlit forgets a widget's state once a run of another page has not drawn it, so the copy button,
which every run of the Train page draws, tells: its key is missing from session state exactly when the page
has just opened.
"""

from __future__ import annotations

import re

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core import links
from core.config import SETTINGS_BY_NAME, TrainConfig
from core.links import Unused, UnusedParam
from ui.clipboard import copy_button
from ui.form import current_values, put_sweep, put_values, sweep_texts
from ui.widgets import TRAIN_PAGE

PAGE_PARAMS = ("run", "compare", "sweep")  # what the Train page follows; the rest of its address is settings
COPY_KEY = "train_copy_link"
NOTICE_KEY = "train_link_notice"  # (what a link could not use, the address it left the form at)
SWEEP_KEY = "train_link_has_sweep"  # the link that opened the page filled the sweep form: show it open
BARE_ADDRESS = re.compile(r"(?i)\b(https?|ftp|mailto|www)(?=[:.])|@")  # what GFM would turn into a link


def just_opened() -> bool:
    """Whether this run of the Train page opened it (fresh session, another page, Back or Forward), not a rerun."""
    return COPY_KEY not in st.session_state or _history_navigation()


def _history_navigation() -> bool:
    """Whether the browser's Back or Forward brought this address: each change of the form pushed one onto the
    browser's history, so Back steps through them and the form follows (otherwise Back would do nothing until
    it ran out of them). Streamlit tells its script run, not the page, hence its run context."""
    context = get_script_run_ctx()
    return bool(getattr(context, "is_history_navigation", False))


def address_query() -> dict[str, str]:
    """The page's address without what it follows: the settings and sweep part, as the browser has it."""
    return {key: st.query_params[key] for key in st.query_params if key not in PAGE_PARAMS}


def open_link(withheld: dict[str, tuple]) -> None:
    """When the page has just opened on a link with settings, put them in the form (and its sweep in the sweep
    form); what the link could not use is kept for `show_link_notice`."""
    query = address_query()
    if not (just_opened() and query):
        return
    link = links.read_link(query, withheld=withheld)
    put_values(link.values)
    put_sweep(link.sweep)
    st.session_state[SWEEP_KEY] = bool(link.sweep)
    unused = sorted(link.unused, key=lambda item: list(query).index(item.param))
    st.session_state[NOTICE_KEY] = (unused, link_query()) if unused else None


def sweep_from_link() -> bool:
    """Whether the link that opened the page filled the sweep form (which then shows open)."""
    return st.session_state.get(SWEEP_KEY, False)


def link_query() -> dict[str, str]:
    """The link to the form as it is: its settings that differ from the defaults, and its sweep's axes."""
    return {**links.settings_query(current_values()), **links.sweep_query(sweep_texts())}


def show_link_notice() -> None:
    """What the link that opened the page could not use, one line each, until a setting changes."""
    notice = st.session_state.get(NOTICE_KEY)
    if not notice:
        return
    unused, left_at = notice
    if link_query() != left_at:
        st.session_state[NOTICE_KEY] = None  # the form moved on: the link's notice no longer describes it
        return
    lines = "\n".join(f"- {_markdown_escaped(describe_unused(item))}" for item in unused)
    left_out = "this one was" if len(unused) == 1 else "these were"
    st.warning(f"**This link's other settings are in the form; {left_out} left out:**\n{lines}",
               icon=":material/link_off:")


def describe_unused(item: UnusedParam) -> str:
    """One parameter a link could not use, in a sentence that names it, says why and what the form holds."""
    given = f"\u201c{_clipped(item.param)}={_clipped(item.text)}\u201d"
    setting = SETTINGS_BY_NAME.get(item.setting) if item.setting else None
    if item.why is Unused.UNKNOWN:
        guess = f" (did you mean {item.suggestion}?)" if item.suggestion else ""
        return f"{_clipped(item.param)} is not a setting{guess}, so {given} was ignored."
    if setting is None:  # a preset or a sweep axis the link names wrong
        return f"{given}: {_clipped(item.detail, 400)}."
    kept = _shown(setting, current_values()[setting.name])
    if item.why is Unused.BAD_VALUE:  # the setting's own message, which names the value, in the form's words
        return f"{_clipped(item.detail, 400).replace(setting.name, setting.label, 1)}, so it stays at {kept}."
    if item.why is Unused.NOT_OFFERED:
        refused = _shown(setting, links.parse_link_value(setting, item.text))
        return f"{setting.label} \u201c{refused}\u201d cannot be chosen on this page, so it stays at {kept}."
    other, allowed = setting.only_with
    other = SETTINGS_BY_NAME[other]
    if allowed is None:
        return (f"{setting.label} applies only with {other.label} chosen, and here there are none, so {given} was "
                "left out.")
    needs = " or ".join(f"\u201c{_shown(other, value)}\u201d" for value in allowed)
    holds = _shown(other, current_values()[other.name])
    return (f"{setting.label} applies only with {other.label} {needs}, and here {other.label} is \u201c{holds}\u201d, "
            f"so {given} was left out.")


def _clipped(text: str, most: int = 60) -> str:
    """A link's text as it may be shown: on one line, and not a page long."""
    text = " ".join(text.split())
    return text if len(text) <= most else text[:most - 1] + "\u2026"


def _markdown_escaped(text: str) -> str:
    """Text from a link shown as written: a link is anyone's, and Markdown in it would be a link, an image or a
    colour on this page. Escapes keep Markdown out; a bare address GFM still links once the escapes are read, so a
    word joiner (invisible) after its http, www or @ keeps it text."""
    text = BARE_ADDRESS.sub(lambda match: match.group(0) + "\u2060", text)
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~<>$:])", r"\\\1", text)


def _shown(setting, value) -> str:
    """A value in the words of the form: a choice's label, layers as 128-64."""
    if isinstance(value, list):
        return "-".join(map(str, value))
    if setting.choices:
        return setting.choice_labels.get(value, str(value))
    return f"{value:,}" if isinstance(value, int) else f"{value:g}" if isinstance(value, float) else str(value)


def keep_in_address() -> dict[str, str]:
    """Write the form's link into the address (beside what the page follows), if it changed; returns it.

    Only the address changes: Streamlit updates the browser's URL without a rerun.
    """
    wanted = link_query()
    if address_query() != wanted:
        followed = {key: st.query_params.get_all(key) for key in PAGE_PARAMS if key in st.query_params}
        st.query_params.from_dict({**followed, **wanted})
    return wanted


def copy_link_button(query: dict[str, str]) -> None:
    """Copy a link to these settings: drawn by every run of the Train page (see just_opened)."""
    copy_button(query, "Copy a link to these settings", COPY_KEY,
                help_text="Copies a link that opens this page with these settings and this sweep.")


def train_settings_link(config: TrainConfig) -> None:
    """A link to the Train page with `config`'s settings in the form."""
    st.page_link(TRAIN_PAGE, label="Open these settings in Train", icon=":material/tune:",
                 query_params=links.settings_query(config, explicit=True))
