"""The spreadsheet: sheets, cells, transformer sessions, column refresh, built-in operators."""
