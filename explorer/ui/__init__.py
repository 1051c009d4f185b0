"""The Streamlit explorer: pages (train_page, sampling_page, plugins_page, and compare_page /
runs_page when present) and the reusable pieces they draw with (views, charts, widgets)."""
