"""STS-B-DIR (sentence-pair similarity, scores in [0, 5]): split files, text pipeline, GloVe, dataset.

``prepare.py`` holds the two preparation commands (``sts_b``, ``glove``); ``published.py`` where the
published split files are downloaded from; ``rebuild_split.py`` the rebuild from GLUE STS-B;
``split_files.py`` reads them; ``text.py`` turns sentences into token ids; ``glove.py`` parses
GloVe and writes and reads the embedding cache; ``dataset.py`` is the reader training uses.
"""
