"""A button that copies a link to this page to the clipboard, drawn like Streamlit's own buttons.

Streamlit has no such button (st.code puts a copy icon on a block of code, not a button), so it is a small
st.components.v2 component: its script runs in the page itself, not in a frame, so it may use the
clipboard, and it never talks back to Python, so a click costs no rerun.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

COPY_HTML = """<button type="button" class="copy">
  <span class="icon" aria-hidden="true">link</span><span class="label"></span>
</button>"""
# Drawn like Streamlit's own secondary buttons, from the theme's variables (light or dark).
COPY_CSS = """
.copy {
  display: inline-flex; align-items: center; justify-content: center; gap: 0.5rem; box-sizing: border-box;
  width: 100%; min-height: 2.5rem; margin: 0; padding: 0.25rem 0.75rem; cursor: pointer; white-space: nowrap;
  font-family: var(--st-font, sans-serif); font-size: 0.875rem; line-height: 1.6;
  color: var(--st-text-color, inherit); background: var(--st-background-color, transparent);
  border: 1px solid var(--st-border-color, rgba(49, 51, 63, 0.2)); border-radius: var(--st-button-radius, 0.5rem);
}
.copy:hover, .copy:focus-visible {
  color: var(--st-primary-color, #ff4b4b); border-color: var(--st-primary-color, #ff4b4b); outline: none;
}
.icon {
  font-family: "Material Symbols Rounded"; font-size: 1rem; line-height: 1; font-weight: 400;
  font-feature-settings: "liga";
}
"""
# The address is this page's own (origin and path from the browser, so a proxy's path prefix is kept) with the
# link's query. navigator.clipboard exists only on https and localhost; over plain http to a shared server the
# older execCommand("copy") still works; failing both, the link is shown to copy by hand.
COPY_JS = """
export default function ({ parentElement, data }) {
  const button = parentElement.querySelector("button");
  const label = button.querySelector(".label");
  label.textContent = data.label;
  button.title = data.help;
  button.onclick = async () => {
    const url = location.origin + location.pathname + (data.query ? "?" + data.query : "");
    let copied = false;
    try { await navigator.clipboard.writeText(url); copied = true; } catch (error) { copied = false; }
    if (!copied) {
      const area = document.createElement("textarea");
      area.value = url;
      area.style.position = "fixed"; area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try { copied = document.execCommand("copy"); } catch (error) { copied = false; }
      area.remove();
    }
    if (!copied) { window.prompt("Copy this link:", url); return; }
    label.textContent = "Link copied";
    setTimeout(() => { label.textContent = data.label; }, 2000);
  };
}
"""
_copy_button = st.components.v2.component("hybrid_lab.copy_link", html=COPY_HTML, css=COPY_CSS, js=COPY_JS)




def copy_button(query: dict[str, str], label: str, key: str, width: str = "stretch", help_text: str = "") -> None:
    """A button that copies this page's address, with `query` as its query, to the clipboard."""
    _copy_button(key=key, data={"query": urlencode(query), "label": label, "help": help_text}, width=width)
