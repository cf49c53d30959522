"""The STS-B-DIR model: the GLUE BiLSTM baseline with max pooling and a pair feature (SPEC 7).

``BiLSTMRegressor(inputs, targets=None, epoch=None) -> (pred (B, 1), features (B, 8 * hidden))``

- ``inputs = (s1 (B, L1) int64, len1 (B,) int64, s2 (B, L2) int64, len2 (B,) int64)``, the
  batches of :func:`ranksim.data.sts_b.dataset.collate_sts_b`: token ids padded with 0, and the true
  length of every sentence (``1 <= len <= L``).
- Each sentence: embedding ``(B, L, E)`` (GloVe, frozen, when given), dropout, a 2-layer
  bidirectional LSTM over the packed sequence (padding never enters the recurrence), dropout,
  then max pooling over time with padded steps set to ``-inf`` -> ``(B, 2H)``.
- Pair feature ``[u, v, |u - v|, u * v]`` -> ``(B, 8H)`` (12,000 for ``H = 1500``), the encoder
  feature ``z`` that RankSim and FDS see, then :class:`~ranksim.models.head.RegressionHead`
  (FDS in training mode, then ``Linear(8H, 1)``).
- ``targets`` (``(B, 1)``, raw scores in ``[0, 5]``, the scale of the STS-B FDS bins) and
  ``epoch`` are used only by FDS. ``pred`` is on the training scale (score / 5, SPEC 6).

As in the authors' model, dropout is applied to the embeddings and to the LSTM outputs but not
between the LSTM layers, and there is no highway layer (the authors' default has none). Both
sentences go through the same LSTM in one call, stacked along the batch, which is the same
computation as two calls and faster.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ranksim.methods.fds import FDS
from ranksim.models.head import RegressionHead


class BiLSTMRegressor(nn.Module):
    """See the module docstring.

    Args:
        vocab_size: rows of the embedding table; index 0 is padding.
        embedding_dim: 300 for GloVe.
        hidden_size: LSTM units per direction (1500 in the paper).
        num_layers: stacked LSTM layers (2).
        dropout: on the embeddings and on the LSTM outputs (0.2).
        embeddings: ``(vocab_size, embedding_dim)`` pretrained matrix (numpy or tensor), or ``None``
            for a randomly initialised, trainable table (CPU-scale configs without GloVe).
        freeze_embeddings: keep pretrained embeddings fixed, as the paper does; ignored without them.
        fds: an FDS module for the head, or ``None``.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 300, hidden_size: int = 1500,
                 num_layers: int = 2, dropout: float = 0.2, embeddings=None, freeze_embeddings: bool = True,
                 fds: nn.Module | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        if embeddings is not None:
            weight = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor)
                                     else embeddings, dtype=torch.float32)
            if tuple(weight.shape) != (vocab_size, embedding_dim):
                raise ValueError(f"embeddings have shape {tuple(weight.shape)}, expected "
                                 f"(vocab_size, embedding_dim) = ({vocab_size}, {embedding_dim})")
            with torch.no_grad():
                self.embedding.weight.copy_(weight)
            self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=True)
        self.feature_dim = 4 * 2 * hidden_size
        self.head = RegressionHead(self.feature_dim, fds)

    @property
    def fds(self) -> FDS | None:
        """The head's FDS module, or ``None``: the training loop's one handle on FDS."""
        return self.head.fds

    @staticmethod
    def _check_inputs(inputs) -> None:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 4:
            raise ValueError("inputs must be (s1 (B, L1), len1 (B,), s2 (B, L2), len2 (B,)), got "
                             f"{type(inputs).__name__} of length {len(inputs) if hasattr(inputs, '__len__') else '?'}")
        s1, len1, s2, len2 = inputs
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        if s1.dim() != 2 or s2.dim() != 2 or len1.dim() != 1 or len2.dim() != 1 or not (
                s1.shape[0] == s2.shape[0] == len1.shape[0] == len2.shape[0]):
            raise ValueError(f"inputs must have shapes (B, L1), (B,), (B, L2), (B,); got {shapes}")
        if s1.is_floating_point() or s2.is_floating_point():
            raise ValueError(f"token ids must be integers, got {s1.dtype} and {s2.dtype}")

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` ids and ``(N,)`` lengths in ``[1, L]`` -> ``(N, 2H)`` max-pooled LSTM states."""
        # pack_padded_sequence wants the lengths on the CPU (a no-op when they are there already).
        lengths_cpu = lengths.detach().to("cpu", torch.long)
        steps = tokens.shape[1]
        x = self.dropout(self.embedding(tokens))
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        out = self.dropout(out)
        valid = torch.arange(steps, device=out.device)[None, :] < lengths.to(out.device)[:, None]
        # max (not amax) sends the gradient to a single step on ties, as the authors' pooling does.
        return out.masked_fill(~valid[:, :, None], float("-inf")).max(dim=1).values

    def features(self, inputs) -> torch.Tensor:
        """The encoder feature ``z = [u, v, |u - v|, u * v]``, ``(B, 8H)``."""
        self._check_inputs(inputs)
        s1, len1, s2, len2 = inputs
        # Lengths go to the CPU once (packing needs them there), which also makes the check cheap.
        lengths = torch.cat([len1.detach().to("cpu", torch.long), len2.detach().to("cpu", torch.long)])
        for name, tokens, side in (("len1", s1, lengths[:len(len1)]), ("len2", s2, lengths[len(len1):])):
            if side.numel() and (int(side.min()) < 1 or int(side.max()) > tokens.shape[1]):
                raise ValueError(f"{name} must lie in [1, {tokens.shape[1]}] for tokens of shape "
                                 f"{tuple(tokens.shape)}, got min {int(side.min())}, max {int(side.max())}")
        steps = max(s1.shape[1], s2.shape[1])
        tokens = torch.cat([nn.functional.pad(s1, (0, steps - s1.shape[1])),
                            nn.functional.pad(s2, (0, steps - s2.shape[1]))])
        u, v = self.encode(tokens, lengths).chunk(2)
        return torch.cat([u, v, (u - v).abs(), u * v], dim=1)

    def forward(self, inputs, targets: torch.Tensor | None = None,
                epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(inputs), targets, epoch)
