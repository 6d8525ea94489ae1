"""The app's entry point: `streamlit run app.py` serves Home.py and the pages in pages/ through one server.

Streamlit finds `app` below and serves it as an ASGI application. Home.py is the main page, so the sidebar
labels it "Home"; the pages/ folder beside it gives the other pages, in file-name order.
"""

import streamlit as st

app = st.App("Home.py")
