"""The DuckDB catalog: every request, video, second and dollar, readable without our code."""
