"""The self-contained HTML report of an audit."""
from gigaudit.report.builder import DEFAULT_MAX_BYTES, build_report, parse_size, report_data, write_report

__all__ = ["DEFAULT_MAX_BYTES", "build_report", "parse_size", "report_data", "write_report"]
