"""Evaluation: quality against classical fills, and speed. Sits beside the inference path and
imports it; nothing on the inference path imports this."""
