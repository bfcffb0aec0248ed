"""Plots and the self-contained HTML report."""

from irmscope.report.html import Section, write_report

__all__ = ["Section", "write_report"]
