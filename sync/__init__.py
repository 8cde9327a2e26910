"""Collaborative documents: the y-websocket framing of y-protocols over pycrdt (the documents issue).

Imports ``channels`` only; never ``presence`` nor ``hub``.
"""
