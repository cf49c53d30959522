"""Age estimation (AgeDB-DIR, IMDB-WIKI-DIR and the synthetic quick start): preparation, reader, image cache.

``prepare.py`` holds the three preparation commands (``imdb_wiki``, ``agedb``, ``cache``);
``benchmarks.py`` what differs between the two benchmarks; ``imdb_wiki.py`` and ``agedb.py`` get
each one's images and raw ages; ``split_file.py`` reads and writes ``age,path,split`` files;
``rebuild_split.py`` draws a split by the DIR procedure; ``verify.py`` checks a prepared root;
``transforms.py`` loads and augments images; ``image_cache.py`` is the uint8 image cache;
``dataset.py`` is the reader training uses; ``synthetic.py`` generates the quick-start data.
"""
