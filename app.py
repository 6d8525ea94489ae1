"""Hybrid Lab's entry point: `streamlit run app.py`."""

import streamlit as st

st.set_page_config(page_title="Hybrid Lab", page_icon="🧪", layout="wide")
st.title("Hybrid Lab")
st.write("Keras layers called on raw TensorFlow tensors, with TensorFlow owning the training.")
