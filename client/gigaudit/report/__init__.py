"""The self-contained HTML audit report."""
from gigaudit.report.builder import build_report, write_report

__all__ = ["build_report", "write_report"]
