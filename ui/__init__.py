"""Streamlit pieces shared by the pages (core never imports Streamlit; this package does)."""
