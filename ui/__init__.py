"""Page support: what only the pages need (texts, the settings form, Plotly figures, the drawing session,
shared widgets). It may import streamlit; core imports neither streamlit nor this package."""
