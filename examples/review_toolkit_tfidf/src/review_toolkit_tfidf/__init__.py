"""review_toolkit_tfidf: a TF-IDF backbone and a random-forest head, registered through entry points.

Neither module is imported here: the toolkit's registry imports a plugin only
when it is asked for by name, so ``import review_toolkit_tfidf`` stays cheap.
"""

__version__ = "0.1.0"
