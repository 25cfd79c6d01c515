"""A pure-Python simulation of vLLM v0.5.5's KV-cache management.

Standard library only, so the same code runs in CPython and in Pyodide.
"""
