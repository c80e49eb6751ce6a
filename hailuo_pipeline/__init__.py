"""hailuo-pipeline: stills + prompts -> Hailuo 2.3 Fast videos on fal, with a DuckDB cost catalog."""

__version__ = "0.1.0"
