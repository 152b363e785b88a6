r"""A small neural forecaster: a temporal convolutional network with the quantile loss (optional).

``tcn`` (:class:`TemporalConvModel`) needs PyTorch (``pip install "optev[neural]"``); without it
asking for the model is a one-line error. It is scale-free like the learned default (everything
in the series' unit over the level :math:`L_o` of the week before the origin,
:class:`~optev.forecast.models.ScaleFreeModel`) and trained on the same (origin, target) pairs.

Network (per pair :math:`(o, \tau)`)
    *Encoder*: the last 7 days before the origin as hourly means over :math:`L_o` (168 values;
    bins longer than an hour are taken as they are), with a second channel that is 1 where the
    hour was observed (unknown hours are 0 in the first), through :data:`DILATIONS`\ -dilated
    causal 1-D convolutions of kernel 3 and ``channels`` (8) channels with ReLU (receptive field
    255 hours, the whole week: Bai, Kolter and Koltun, "An empirical evaluation of generic
    convolutional and recurrent networks for sequence modeling", 2018); its output at the last
    hour is the week's summary. *Head*: that summary with the pair's features
    (:data:`~optev.forecast.features.FEATURES`, standardised on the training pairs; unknown ones
    0) through a hidden layer of 64 ReLU units to three outputs :math:`a, b, c`: the quantiles
    :math:`(a - \operatorname{softplus} b,\ a,\ a + \operatorname{softplus} c)` (never crossing).
    *Loss*: the pinball loss summed over :data:`~optev.forecast.models.QUANTILES`; Adam, seeded,
    ``epochs`` (10) passes over the pairs in batches of about 512 (whole origins with all their
    pairs, so that the encoder runs once per origin). Intervals are then calibrated like every
    model's (split conformal, :mod:`optev.forecast.models`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optev.errors import DataError
from optev.forecast.features import Calendar, pair_features
from optev.forecast.models import QUANTILES, ScaleFreeModel, pairs

try:
    import torch

    HAVE_TORCH = True
except ImportError:  # the optional extra optev[neural]
    HAVE_TORCH = False

DILATIONS = (1, 2, 4, 8, 16, 32, 64)
"""Dilations of the encoder's causal convolutions (kernel 3: a receptive field of 255 hours)."""

WEEK_HOURS = 168
"""Length of the encoder's input: the hours of the week before the origin."""


def torch_available() -> bool:
    """Whether PyTorch is installed (the ``tcn`` model can run)."""
    return HAVE_TORCH


class TemporalConvModel(ScaleFreeModel):
    """The ``tcn`` model (module docstring)."""

    name = "tcn"

    def __init__(self, *, channels: int = 8, epochs: int = 10, batch: int = 512, learning_rate: float = 3e-3,
                 seed: int = 0, threads: int = 2) -> None:
        if not torch_available():
            raise DataError('the tcn model needs PyTorch: pip install "optev[neural]" (or leave tcn out of --models)')
        super().__init__()
        self.channels, self.epochs, self.batch, self.learning_rate = channels, epochs, batch, learning_rate
        self.seed, self.threads = seed, threads
        self._net: Any = None
        self._mean = np.zeros(0)
        self._std = np.ones(0)

    def _windows(self, y_past: np.ndarray, cal: Calendar, origins: np.ndarray, level: np.ndarray) -> np.ndarray:
        """(n, 2, hours) encoder inputs of ``origins``: hourly means over the level, and observed flags."""
        per_hour = max(1, int(round(cal.per_day / 24)))
        hours = WEEK_HOURS if cal.per_day >= 24 else 7 * cal.per_day
        width = hours * per_hour
        idx = origins[:, None] - width + np.arange(width)[None, :]
        flat = np.full(idx.shape, np.nan)
        ok = idx >= 0
        flat[ok] = y_past[idx[ok]]
        values = flat.reshape(len(origins), hours, per_hour)
        seen = np.isfinite(values)
        count = seen.sum(axis=2)
        total = np.where(seen, values, 0.0).sum(axis=2)
        mean = np.divide(total, count, out=np.zeros(count.shape), where=count > 0)
        return np.stack([mean / level[:, None], (count > 0).astype(float)], axis=1)

    def _standard(self, x: np.ndarray) -> np.ndarray:
        z = (x - self._mean) / self._std
        return np.where(np.isfinite(z), z, 0.0)

    def _fit_core(self, y_train: np.ndarray, cal: Calendar, horizon: int) -> None:
        origin, _, x, target, level = self._training_pairs(y_train, cal, horizon)
        seen = np.isfinite(x)
        count = np.maximum(seen.sum(axis=0), 1)
        self._mean = np.where(seen, x, 0.0).sum(axis=0) / count
        sd = np.sqrt(np.where(seen, (x - self._mean) ** 2, 0.0).sum(axis=0) / count)
        self._std = np.where(sd > 0, sd, 1.0)
        unique, which = np.unique(origin, return_inverse=True)
        windows = self._windows(y_train, cal, unique, self._level(y_train, cal, unique))
        torch.manual_seed(self.seed)
        torch.set_num_threads(self.threads)
        net = _network(x.shape[1], self.channels)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
        w_t = torch.as_tensor(windows, dtype=torch.float32)
        x_t = torch.as_tensor(self._standard(x), dtype=torch.float32)
        y_t = torch.as_tensor(target, dtype=torch.float32)
        levels = torch.as_tensor(QUANTILES, dtype=torch.float32)
        # batches of origins with all their pairs: the encoder runs once per origin, not per pair
        order = np.argsort(which, kind="stable")
        count = np.bincount(which, minlength=unique.size)
        start = np.cumsum(count) - count
        per_batch = max(1, int(round(self.batch * unique.size / max(len(which), 1))))
        rng = np.random.default_rng(self.seed)
        net.train()
        for _ in range(self.epochs):
            for chunk in np.array_split(rng.permutation(unique.size), max(1, -(-unique.size // per_batch))):
                n = count[chunk]
                rows = order[np.repeat(start[chunk] - np.cumsum(n) + n, n) + np.arange(n.sum())]
                local = torch.as_tensor(np.repeat(np.arange(chunk.size), n), dtype=torch.long)
                rows_t = torch.as_tensor(rows, dtype=torch.long)
                q = net.head_of(net.encode(w_t[torch.as_tensor(chunk, dtype=torch.long)])[local], x_t[rows_t])
                err = y_t[rows_t, None] - q
                loss = torch.maximum(levels * err, (levels - 1.0) * err).sum(dim=1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        self._net = net

    def _raw(self, y_past: np.ndarray, cal: Calendar, origins: np.ndarray, horizon: int) -> np.ndarray:
        o, tau = pairs(origins, horizon)
        level = self._level(y_past, cal, o)
        x = self._standard(self._scale_features(pair_features(y_past, cal, o, tau), level))
        o_level = self._level(y_past, cal, origins)
        windows = torch.as_tensor(self._windows(y_past, cal, origins, o_level), dtype=torch.float32)
        with torch.no_grad():
            summary = self._net.encode(windows).repeat_interleave(horizon, dim=0)
            q = self._net.head_of(summary, torch.as_tensor(x, dtype=torch.float32))
        out = q.numpy().astype(float) * level[:, None]
        return out.reshape(origins.size, horizon, 3)


def _network(n_features: int, channels: int) -> Any:
    """The encoder and head of the module docstring as a :class:`torch.nn.Module`."""
    nn = torch.nn

    class CausalConv(torch.nn.Module):
        def __init__(self, c_in: int, c_out: int, dilation: int) -> None:
            super().__init__()
            self.pad = 2 * dilation
            self.conv = nn.Conv1d(c_in, c_out, kernel_size=3, dilation=dilation)

        def forward(self, h: Any) -> Any:
            return torch.relu(self.conv(torch.nn.functional.pad(h, (self.pad, 0))))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers = [CausalConv(2 if i == 0 else channels, channels, d) for i, d in enumerate(DILATIONS)]
            self.encoder = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Linear(channels + n_features, 64), nn.ReLU(), nn.Linear(64, 3))

        def encode(self, window: Any) -> Any:
            """The week's summary: the encoder's output at the last hour."""
            return self.encoder(window)[:, :, -1]

        def head_of(self, summary: Any, features: Any) -> Any:
            """The three quantiles of each pair (never crossing)."""
            a, b, c = self.head(torch.cat([summary, features], dim=1)).unbind(dim=1)
            sp = torch.nn.functional.softplus
            return torch.stack([a - sp(b), a, a + sp(c)], dim=1)

        def forward(self, window: Any, features: Any) -> Any:
            return self.head_of(self.encode(window), features)

    return Net()
