"""RankSim and the DIR benchmark methods (LDS, FDS) as one tested library.

The method modules (``ranking``, ``regularizer``, ``lds``, ``fds``, ``losses``, ``metrics``) are
device- and dtype-agnostic; the pipeline modules (``config``, ``engine``, ``data``, ``models``)
build on them.
"""

__version__ = "0.1.0"
