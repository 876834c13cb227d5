"""The side-by-side benchmark that `python bench/compare.py` runs; that file's docstring
says what it measures and where each part lives."""
