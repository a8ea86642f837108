"""Step 1 and 2 of the pipeline: get the Open-i chest X-rays (``scraper.py``) and split them (``scraper.process``).

Modules: ``store`` (the OUT layout: safe ids, verified PNG files, datas.json), ``openi`` (the Open-i API client),
``archive`` (the same OUT from the official NLMCXR archives), ``mesh`` (MeSH terms -> classes, both datas.json
shapes) and ``process`` (the report-level train/test split).
"""
