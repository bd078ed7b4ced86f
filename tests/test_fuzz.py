"""The bad-input contract, fuzzed over the public API.

For every public function (enumerated from ``minidiff`` and ``minidiff.nn``; each must have an entry in
``SPECS`` or in ``NOT_FUZZED`` with a reason), one argument at a time is replaced by a generated wrong
value: a wrong type, shape or dtype, a non-finite value, an out-of-range number. The call must raise
ValueError or TypeError (never another exception, never a silent result), and no array argument may be
changed by the call. The valid call must return finite results, also at valid extremes.

A spec lists the arguments by kind (``Arr``, ``Real``, ``Int``, ...); each kind knows a valid value and a
strategy of invalid ones. Layer and model forward passes do not scan their inputs for NaN/inf (that would
be a host sync per layer inside training loops; the data are checked once where they enter training or
sampling), so their array slots say ``finite=False`` and are fuzzed for type, dtype and shape only.
"""
import inspect
import math
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidiff as md
from minidiff import cascade, latent, nn

pytestmark = pytest.mark.usefixtures("numpy_backend")


# ----------------------------------------------------------------------------- argument kinds
def _rng(seed=0):
    return np.random.default_rng(seed)


class Slot:
    """One argument: ``valid()`` builds a fresh valid value, ``bad`` is a strategy of invalid ones."""

    def valid(self):
        raise NotImplementedError

    @property
    def bad(self):
        raise NotImplementedError


NOT_VALUES = [None, "1.0", b"1", object(), {"a": 1}]


class Arr(Slot):
    """A float array of ``shape`` (float64 unless ``dtype``), entries ~ scale * N(0, 1) (or ``fill``)."""

    def __init__(self, shape, dtype="float64", scale=1.0, fill=None, finite=True, ndim_fixed=True, low=None,
                 none_ok=False):
        self.shape, self.dtype, self.scale, self.fill, self.none_ok = tuple(shape), dtype, scale, fill, none_ok
        self.finite, self.ndim_fixed, self.low = finite, ndim_fixed, low

    def valid(self):
        if self.fill is not None:
            return np.full(self.shape, self.fill, dtype=self.dtype)
        a = self.scale * _rng(len(self.shape)).standard_normal(self.shape)
        if self.low is not None:
            a = np.abs(a) + self.low
        return a.astype(self.dtype)

    @property
    def bad(self):
        v = self.valid
        wrong = [
            st.sampled_from([w for w in NOT_VALUES + [1.5, True] if not (w is None and self.none_ok)]),
            st.builds(lambda: v().tolist()),  # a list is not an array
            st.builds(lambda: v().astype(np.int64)),
            st.builds(lambda: v().astype(np.complex128)),
            st.builds(lambda: v().astype(np.float16)),
            st.builds(lambda: v().astype(str)),
            st.builds(lambda: v().astype(object)),
            st.builds(lambda: v() > 0),  # bool array
        ]
        if self.finite:
            def poison(value, pos):
                a = v()
                if a.size:
                    a.reshape(-1)[pos % a.size] = value
                return a
            wrong.append(st.builds(poison, st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 10**6)))
        if self.ndim_fixed:
            wrong.append(st.builds(lambda: v()[None]))  # one axis too many
            if len(self.shape) >= 1:
                wrong.append(st.builds(lambda: v()[..., 0] if len(self.shape) > 1 else np.float64(v()[0])))
        return st.one_of(wrong)


class Real(Slot):
    """A finite real in [low, high] (open ends with low_open/high_open); ``allowed``: extra valid values
    (None, inf) taken out of the bad set."""

    def __init__(self, value, low=None, high=None, low_open=False, high_open=False, allowed=()):
        self.value, self.low, self.high, self.low_open, self.high_open = value, low, high, low_open, high_open
        self.allowed = allowed

    def valid(self):
        return self.value

    @property
    def bad(self):
        wrong = [st.sampled_from([v for v in NOT_VALUES + [True, 1 + 2j, math.nan, math.inf, -math.inf,
                                                           np.array([1.0]), np.complex64(1)]
                                  if not any(v is a or v == a for a in self.allowed if not isinstance(v, np.ndarray))])]
        if self.low is not None:
            wrong.append(st.floats(-1e300, self.low, exclude_max=not self.low_open, allow_nan=False))
        if self.high is not None:
            wrong.append(st.floats(self.high, 1e300, exclude_min=not self.high_open, allow_nan=False))
        return st.one_of(wrong)


class Int(Slot):
    def __init__(self, value, low=0, high=None):
        self.value, self.low, self.high = value, low, high

    def valid(self):
        return self.value

    @property
    def bad(self):
        wrong = [st.sampled_from(NOT_VALUES + [True, float(self.value), 2.5, math.nan, np.float64(self.value),
                                               2**70]),
                 st.integers(-2**70, self.low - 1)]
        if self.high is not None:
            wrong.append(st.integers(self.high + 1, 2**70))
        return st.one_of(wrong)


class Fixed(Slot):
    """A slot whose valid value is the one given."""

    def __init__(self, value):
        self.value = value

    def valid(self):
        return self.value


class Name(Fixed):
    """Any non-empty str."""

    @property
    def bad(self):
        return st.sampled_from([None, 1, True, b"x", ["a"]])


class Choice(Fixed):
    @property
    def bad(self):
        return st.sampled_from(NOT_VALUES[:-1] + [1, True, "no-such-choice", ""])


class Bool(Fixed):
    @property
    def bad(self):
        return st.sampled_from(["yes", 1, 0.0, None, np.array([True, False])])


class Rng(Slot):
    def valid(self):
        return md.default_rng(0)

    @property
    def bad(self):
        return st.sampled_from(["seed", 1.5, True, object(), -1, np.array([1, 2])])


class Labels(Slot):
    def __init__(self, B, K, fixed_batch=True, none_ok=False, shape=None):
        self.B, self.K, self.fixed_batch, self.none_ok = B, K, fixed_batch, none_ok
        self.shape = (B,) if shape is None else shape

    def valid(self):
        return np.arange(math.prod(self.shape), dtype=np.int64).reshape(self.shape) % self.K

    @property
    def bad(self):
        v = self.valid
        wrong = [st.sampled_from([w for w in NOT_VALUES + [1.5, list(range(self.B))] if not (w is None and self.none_ok)]),
                 st.builds(lambda: v().astype(np.float64)),
                 st.builds(lambda: v()[None]),
                 st.builds(lambda: np.full(self.shape, -1)),
                 st.builds(lambda: np.full(self.shape, self.K + 5))]
        if self.fixed_batch:
            wrong.append(st.builds(lambda: np.arange(self.B + 1) % self.K))
        return st.one_of(wrong)


class Grid(Slot):
    """A 1-D grid of numbers (sigmas, betas, alpha_bars) within [low, high]."""

    def __init__(self, values, low=None, high=None):
        self.values, self.low, self.high = np.asarray(values, dtype=np.float64), low, high

    def valid(self):
        return self.values.copy()

    @property
    def bad(self):
        v = self.valid
        wrong = [st.sampled_from(NOT_VALUES + [1.5, True, [], [[1.0]], ["0.1"], np.array(["0.1", "0.2"])]),
                 st.builds(lambda: v().astype(np.complex128)),
                 st.builds(lambda: v().astype(np.int64)),
                 st.builds(lambda: v()[None]),
                 st.builds(lambda i, val: np.where(np.arange(len(self.values)) == i % len(self.values), val, v()),
                           st.integers(0, 100), st.sampled_from([np.nan, np.inf, -np.inf]))]
        if self.low is not None:
            wrong.append(st.builds(lambda: np.concatenate([v(), [self.low - 1.0]])[::-1].copy()))
        if self.high is not None:
            wrong.append(st.builds(lambda: np.concatenate([[self.high * 2 + 1.0], v()])))
        return st.one_of(wrong)


class Fn(Slot):
    """A callable argument (a denoiser, a model)."""

    def __init__(self, make, none_ok=False):
        self.make, self.none_ok = make, none_ok

    def valid(self):
        return self.make()

    @property
    def bad(self):
        return st.sampled_from([w for w in [None, 1, "denoiser", np.zeros(3)] if not (w is None and self.none_ok)])


class Const(Slot):
    """An argument that is not fuzzed (a model under test, say)."""

    def __init__(self, make):
        self.make = make

    def valid(self):
        return self.make()

    @property
    def bad(self):
        return st.nothing()


class Dtype(Slot):
    def valid(self):
        return "float64"

    @property
    def bad(self):
        return st.sampled_from(["float16", np.float16, "int32", "complex64", "bool", 3, None, "nope", True])


class WritePath(Slot):
    def valid(self):
        return os.path.join(tempfile.mkdtemp(prefix="fuzz-"), "out.npz")

    @property
    def bad(self):
        def under_a_file():
            d = tempfile.mkdtemp(prefix="fuzz-")
            f = os.path.join(d, "file")
            open(f, "w").close()
            return os.path.join(f, "x.npz")
        return st.one_of(st.sampled_from([None, 3, b"x.npz", ""]), st.builds(tempfile.mkdtemp),
                         st.builds(under_a_file))


class Spec:
    """``call(**kwargs)`` with one slot per keyword argument; ``extreme`` are extra valid kwargs sets."""

    def __init__(self, call, extreme=(), **slots):
        self.call, self.slots, self.extreme = call, slots, extreme

    def valid_kwargs(self):
        return {k: s.valid() for k, s in self.slots.items()}


# ----------------------------------------------------------------------------- helpers for the table
B, D = 4, 2


def X(shape=(B, D), **kw):
    return Arr(shape, **kw)


def sigma(value=0.5):
    return Real(value, 1e-15, 1e15)


def mlp(**kw):
    return nn.MLPDenoiser(D, hidden=(8,), dtype="float64", seed=0, **kw)


def unet():
    return nn.UNetDenoiser(1, base_channels=4, channel_mult=(1,), groups=2, dtype="float64", seed=0)


def clf():
    return nn.NoiseAwareClassifier(D, 3, hidden=(8,), dtype="float64", seed=0)


def eps_model(x, s):
    return 0.1 * x


def ideal():
    return md.IdealDenoiser(X((16, D)).valid())


def ae():
    return nn.Autoencoder(1, 2, 4, (1, 1), dtype="float64", seed=0)


def params():
    return mlp().parameters()


def with_grads():
    m = mlp()
    for p in m.parameters():
        p.grad[...] = 0.1
    return m.parameters()


SIG_GRID = [10.0, 1.0, 0.1, 0.0]
BETAS = np.linspace(1e-3, 0.02, 10)
ALPHA_BARS = np.cumprod(1 - BETAS)


def _spiral():
    return md.get_dataset("spiral")


SPECS = {
    # forward
    "add_noise_ve": Spec(md.add_noise_ve, x0=X(ndim_fixed=False), sigma=sigma(), eps=X(),
                         extreme=[{"sigma": 1e-15}, {"sigma": 1e15}]),
    "add_noise_vp": Spec(md.add_noise_vp, x0=X(ndim_fixed=False), alpha_bar=Real(0.5, 1e-300, 1.0), eps=X(),
                         extreme=[{"alpha_bar": 1e-300}, {"alpha_bar": 1.0}]),
    "vp_to_ve": Spec(md.vp_to_ve, x_vp=X(ndim_fixed=False), alpha_bar=Real(0.5, 1e-300, 1.0)),
    "ve_to_vp": Spec(md.ve_to_vp, x_ve=X(ndim_fixed=False), sigma=Real(0.5, 0.0, 1e15),
                     extreme=[{"sigma": 0.0}, {"sigma": 1e15}]),
    "x0_from_eps": Spec(md.x0_from_eps, x=X(ndim_fixed=False), sigma=sigma(), eps=X()),
    "eps_from_x0": Spec(md.eps_from_x0, x=X(ndim_fixed=False), sigma=sigma(), x0=X(),
                        extreme=[{"sigma": 1e-15}]),
    "score_from_eps": Spec(md.score_from_eps, eps=X(ndim_fixed=False), sigma=sigma(), extreme=[{"sigma": 1e-15}]),
    "eps_from_score": Spec(md.eps_from_score, score=X(ndim_fixed=False), sigma=sigma()),
    "v_from_eps": Spec(md.v_from_eps, x0=X(ndim_fixed=False), eps=X(), alpha_bar=Real(0.5, 1e-300, 1.0)),
    "eps_from_v": Spec(md.eps_from_v, x_vp=X(ndim_fixed=False), v=X(), alpha_bar=Real(0.5, 1e-300, 1.0)),
    "x0_from_v": Spec(md.x0_from_v, x_vp=X(ndim_fixed=False), v=X(), alpha_bar=Real(0.5, 1e-300, 1.0)),
    "ddpm_posterior": Spec(md.ddpm_posterior, alpha_bar_t=Real(0.5, 0.0, 1.0, True, True),
                           alpha_bar_prev=Real(0.9, 0.5, 1.0, True, False)),
    "random_walk": Spec(md.random_walk, x0=X(ndim_fixed=False), sigmas=Grid([0.1, 0.2], 0.0), rng=Rng()),
    "random_walk_marginal_std": Spec(md.random_walk_marginal_std, sigmas=Grid([0.1, 0.2], 0.0)),
    "vp_chain": Spec(md.vp_chain, x0=X(ndim_fixed=False), betas=Grid(BETAS, 0.0, 1.0), rng=Rng()),
    "vp_chain_marginal": Spec(md.vp_chain_marginal, betas=Grid(BETAS, 0.0, 1.0)),
    # schedules
    "linear_betas": Spec(md.linear_betas, T=Int(10, 1, 10**6), beta_start=Real(1e-4, 0, 1, True, True),
                         beta_end=Real(0.02, 0, 1, True, True)),
    "scaled_linear_betas": Spec(md.scaled_linear_betas, T=Int(10, 1, 10**6), beta_start=Real(1e-4, 0, 1, True, True),
                                beta_end=Real(0.02, 0, 1, True, True)),
    "cosine_betas": Spec(md.cosine_betas, T=Int(10, 1, 10**6), s=Real(0.008, 0.0, 1.0),
                         max_beta=Real(0.999, 0, 1, True, True)),
    "alpha_bars": Spec(md.alpha_bars, betas=Grid(BETAS, 0.0, 1.0)),
    "betas_from_alpha_bars": Spec(md.betas_from_alpha_bars, alpha_bar=Grid(ALPHA_BARS, 0.0, 1.0)),
    "sigmas_from_alpha_bars": Spec(md.sigmas_from_alpha_bars, alpha_bar=Grid(ALPHA_BARS, 0.0, 1.0)),
    "sigmas_from_betas": Spec(md.sigmas_from_betas, betas=Grid(BETAS, 0.0, 1.0)),
    "alpha_bars_from_sigmas": Spec(md.alpha_bars_from_sigmas, sigmas=Grid([0.1, 1.0], 0.0)),
    "log_snr": Spec(md.log_snr, alpha_bar=Grid(ALPHA_BARS, 0.0, 1.0)),
    "log_linear_sigmas": Spec(md.log_linear_sigmas, n=Int(5, 2, 10**6), sigma_min=Real(0.01, 1e-15, 1e15),
                              sigma_max=Real(80.0, 1e-15, 1e15)),
    "karras_sigmas": Spec(md.karras_sigmas, n=Int(5, 2, 10**6), sigma_min=Real(0.01, 1e-15, 1e15),
                          sigma_max=Real(80.0, 1e-15, 1e15), rho=Real(7.0, 0.1, 100.0),
                          extreme=[{"rho": 0.1, "sigma_max": 1e15}, {"rho": 100.0, "sigma_min": 1e-15}]),
    "timesteps": Spec(md.timesteps, n_steps=Int(5, 1, 100), T=Int(100, 1, 10**6), spacing=Choice("leading"),
                      offset=Int(0, 0, 19)),  # leading: 4 * (100 // 5) + offset <= 99
    "Schedule": Spec(md.Schedule, sigmas=Grid([0.1, 1.0, 10.0], 1e-15, 1e15), name=Name("custom")),
    "Schedule.sample_sigmas": Spec(lambda n, rng, dtype: md.Schedule.log_linear(T=10).sample_sigmas(n, rng, dtype),
                                   n=Int(4, 1), rng=Rng(), dtype=Dtype()),
    "Schedule.sampling_sigmas": Spec(lambda steps, spacing, final_zero: md.Schedule.log_linear(T=50).sampling_sigmas(
        steps, spacing, final_zero), steps=Int(5, 1, 10**6), spacing=Choice("karras"), final_zero=Bool(True)),
    "Schedule.check_terminal_noise": Spec(lambda data_rms, max_kl: md.Schedule.log_linear(T=10).check_terminal_noise(
        data_rms, max_kl), data_rms=Real(1.0, 0.0, None, True), max_kl=Real(0.1, 0.0, None, True)),
    "Schedule.from_name": Spec(lambda name: md.Schedule.from_name(name, T=10), name=Choice("cosine")),
    # ideal denoiser
    "IdealDenoiser": Spec(md.IdealDenoiser, data=X((8, D), ndim_fixed=False), chunk_size=Int(4, 1)),
    "IdealDenoiser.__call__": Spec(lambda x, sigma: ideal()(x, sigma), x=X(), sigma=sigma(),
                                   extreme=[{"sigma": 1e-15}, {"sigma": 1e15}]),
    "IdealDenoiser.x0_hat": Spec(lambda x, sigma: ideal().x0_hat(x, sigma), x=X(), sigma=sigma()),
    "IdealDenoiser.weights": Spec(lambda x, sigma: ideal().weights(x, sigma), x=X(), sigma=sigma()),
    "IdealDenoiser.smoothed_dist2": Spec(lambda x, sigma: ideal().smoothed_dist2(x, sigma), x=X(), sigma=sigma()),
    "project": Spec(md.project, x=X(), data=X((8, D)), chunk_size=Int(3, 1)),
    "dist": Spec(md.dist, x=X(), data=X((8, D)), chunk_size=Int(3, 1)),
    # samplers
    "denoise_once": Spec(md.denoise_once, denoiser=Fn(ideal), x=X(), sigma=sigma()),
    "sample": Spec(lambda denoiser, sigmas, x, method, gamma: md.sample(denoiser, sigmas, x, method=method, gamma=gamma),
                   denoiser=Fn(ideal), sigmas=Grid(SIG_GRID, 0.0, 1e15), x=X(), method=Choice("family"),
                   gamma=Real(2.0, 0.0, 1e6, True, allowed=(None,))),
    "iter_sample": Spec(lambda denoiser, sigmas, x, mu, rng, final_noise: list(md.iter_sample(
        denoiser, sigmas, x, mu=mu, rng=rng, final_noise=final_noise)), denoiser=Fn(ideal),
        sigmas=Grid(SIG_GRID, 0.0, 1e15), x=X(), mu=Real(0.5, 0.0, 1.0, False, True), rng=Rng(),
        final_noise=Real(0.0, 0.0, 1e15)),
    "ddpm_ancestral_vp": Spec(md.ddpm_ancestral_vp, eps_model_vp=Fn(lambda: eps_model),
                              alpha_bars=Grid(ALPHA_BARS, 0.0, 1.0), timesteps=Const(lambda: np.array([9, 5, 0])),
                              x_T=X(ndim_fixed=False), rng=Rng()),
    "ddim_vp": Spec(md.ddim_vp, eps_model_vp=Fn(lambda: eps_model), alpha_bars=Grid(ALPHA_BARS, 0.0, 1.0),
                    timesteps=Const(lambda: np.array([9, 5, 0])), x_T=X(ndim_fixed=False), eta=Real(0.5, 0.0, 1.0),
                    rng=Rng()),
    "CountingDenoiser": Spec(md.CountingDenoiser, denoiser=Fn(ideal)),
    # guidance
    "classifier_free": Spec(lambda cond_denoiser, y, w: md.classifier_free(cond_denoiser, y, w)(X().valid(), 0.5),
                            cond_denoiser=Fn(lambda: mlp(num_classes=3)), y=Labels(B, 3), w=Real(2.0)),
    "classifier_guidance": Spec(lambda denoiser, y, scale: md.classifier_guidance(denoiser, clf(), y, scale)(
        X().valid(), 0.5), denoiser=Fn(mlp), y=Labels(B, 3), scale=Real(1.0)),
    # metrics
    "knn": Spec(md.knn, x=X(), ref=X((8, D)), k=Int(2, 1, 8), chunk_size=Int(3, 1)),
    "knn_distances": Spec(md.knn_distances, x=X(), ref=X((8, D)), k=Int(2, 1, 8), chunk_size=Int(3, 1)),
    "memorization_rate": Spec(md.memorization_rate, samples=X(), train=X((8, D)), ratio=Real(0.3, 0.0, 1.0, True),
                              chunk_size=Int(3, 1)),
    "sliced_wasserstein": Spec(md.sliced_wasserstein, a=X(), b=X((6, D)), n_projections=Int(8, 1), rng=Rng(),
                               chunk_size=Int(3, 1)),
    "mmd_rbf": Spec(md.mmd_rbf, a=X(), b=X((6, D)), bandwidth=Real(1.0, 1e-150, 1e150, allowed=(None,)), chunk_size=Int(3, 1),
                    extreme=[{"bandwidth": 1e-150}, {"bandwidth": 1e150}]),
    "precision_recall": Spec(md.precision_recall, real=X((8, D)), fake=X((8, D)), k=Int(2, 1, 7),
                             chunk_size=Int(3, 1)),
    "gaussian_fit": Spec(md.metrics.gaussian_fit, features=X((8, 3))),
    "feature_fid": Spec(md.metrics.feature_fid, real_features=X((8, 3)), fake_features=X((9, 3))),
    "frechet_distance": Spec(md.metrics.frechet_distance, mu1=X((3,)), C1=Arr((3, 3), fill=0.0),
                             mu2=X((3,)), C2=Const(lambda: np.eye(3))),
    "manifold_distance": Spec(md.manifold_distance, x=X(), dataset=Const(_spiral)),
    # datasets
    "get_dataset": Spec(md.get_dataset, name=Choice("moons")),
    "Dataset.sample": Spec(lambda n, rng: _spiral().sample(n, rng), n=Int(5, 1, 10**7), rng=Rng()),
    "Dataset.project": Spec(lambda x: _spiral().project(x), x=X()),
    "Dataset.distance": Spec(lambda x: _spiral().distance(x), x=X()),
    "Spiral": Spec(lambda noise: md.datasets.Spiral(noise).sample(3, 0), noise=Real(0.1, 0.0, 1e6)),
    "Sphere": Spec(lambda dim, radius: md.datasets.Sphere(dim, radius).sample(3, 0), dim=Int(3, 2, 2**62),
                   radius=Real(1.5, 0.0, 1e6, True)),
    "Torus": Spec(lambda R, r: md.datasets.Torus(R, r).sample(3, 0), R=Real(1.5, 1.0, 1e6), r=Real(0.5, 0.0, 1.5, True, True)),
    "EightGaussians": Spec(lambda std: md.datasets.EightGaussians(std).sample(3, 0), std=Real(0.1, 0.0, 1e6)),
    "Circles": Spec(lambda radius: md.datasets.Circles((0.5, radius)).sample(3, 0), radius=Real(1.0, 0.0, 1e6, True)),
    "SpiralArms": Spec(lambda num_arms: md.datasets.SpiralArms(num_arms).sample(3, 0), num_arms=Int(3, 2, 10**4)),
    "GlyphDigits": Spec(lambda max_rotation: md.datasets.GlyphDigits(16, max_rotation).sample(2, 0),
                        max_rotation=Real(12.0, 0.0, 180.0)),
    # reversal
    "reverse_point_clouds": Spec(lambda trajectory, sigmas, noise_scale, method: md.reverse_point_clouds(
        trajectory, sigmas, noise_scale=noise_scale, method=method, rng=0), trajectory=X((3, 8, D)),
        sigmas=Grid([0.1, 0.2], 1e-15, 1e15), noise_scale=Real(1.0, 0.0, 1e6), method=Choice("brute")),
    # nn: layers (constructors and forward passes)
    "Linear": Spec(nn.Linear, in_features=Int(3, 1, 2**16), out_features=Int(2, 1, 2**16), bias=Bool(True),
                   dtype=Dtype(), seed=Rng()),
    "Linear.__call__": Spec(lambda x: nn.Linear(D, 3, dtype="float64")(x), x=X(finite=False, ndim_fixed=False)),
    "LayerNorm": Spec(nn.LayerNorm, dim=Int(3, 1, 2**16), eps=Real(1e-5, 0.0, 1.0, True), dtype=Dtype()),
    "LayerNorm.__call__": Spec(lambda x: nn.LayerNorm(D, dtype="float64")(x), x=X(finite=False, ndim_fixed=False)),
    "GroupNorm": Spec(nn.GroupNorm, groups=Int(2, 1, 2**16), channels=Int(4, 1, 2**16), dtype=Dtype()),
    "GroupNorm.__call__": Spec(lambda x: nn.GroupNorm(2, 4, dtype="float64")(x), x=X((2, 3, 3, 4), finite=False)),
    "Conv2d": Spec(nn.Conv2d, in_channels=Int(2, 1, 2**16), out_channels=Int(3, 1, 2**16), dtype=Dtype(), seed=Rng()),
    "Conv2d.__call__": Spec(lambda x: nn.Conv2d(2, 3, dtype="float64")(x), x=X((2, 4, 4, 2), finite=False)),
    "Upsample.__call__": Spec(lambda x: nn.Upsample()(x), x=X((1, 2, 2, 3), finite=False)),
    "Downsample.__call__": Spec(lambda x: nn.Downsample()(x), x=X((1, 4, 4, 3), finite=False)),
    "Embedding": Spec(nn.Embedding, num_embeddings=Int(4, 1, 2**16), dim=Int(3, 1, 2**16), dtype=Dtype()),
    "Embedding.__call__": Spec(lambda labels: nn.Embedding(3, 2, dtype="float64")(labels),
                               labels=Labels(B, 3, fixed_batch=False)),
    "SigmaEmbedding": Spec(nn.SigmaEmbedding, num_frequencies=Int(4, 1, 4096),
                           min_frequency=Real(0.25, 0.0, 1e6, True), dtype=Dtype()),
    "SigmaEmbedding.__call__": Spec(lambda sigma: nn.SigmaEmbedding(dtype="float64")(sigma),
                                    sigma=Arr((B,), low=0.1, finite=True)),
    "ResBlock": Spec(nn.ResBlock, in_channels=Int(4, 1, 2**16), out_channels=Int(4, 1, 2**16), emb_dim=Int(3, 1, 2**16),
                     groups=Int(2, 1, 2**16), dtype=Dtype()),
    "make_activation": Spec(nn.make_activation, name=Choice("relu")),
    # nn: models
    "MLPDenoiser": Spec(lambda dim, activation, dtype, seed: nn.MLPDenoiser(dim, (8,), activation, dtype=dtype, seed=seed),
                        dim=Int(2, 1, 2**16), activation=Choice("silu"), dtype=Dtype(), seed=Rng()),
    "MLPDenoiser.__call__": Spec(lambda x, sigma, y: mlp(num_classes=3)(x, sigma, y),
                                 x=X(finite=False), sigma=sigma(), y=Labels(B, 4, none_ok=True),
                                 extreme=[{"sigma": 1e-15}, {"sigma": 1e15}]),
    "UNetDenoiser": Spec(lambda channels, base_channels: nn.UNetDenoiser(channels, base_channels, (1,), groups=2),
                         channels=Int(1, 1, 2**16), base_channels=Int(4, 1, 2**16)),
    "UNetDenoiser.__call__": Spec(lambda x, sigma: unet()(x, sigma), x=X((2, 1, 4, 4), finite=False), sigma=sigma()),
    "NoiseAwareClassifier": Spec(lambda dim, num_classes: nn.NoiseAwareClassifier(dim, num_classes, (8,)),
                                 dim=Int(2, 1, 2**16), num_classes=Int(3, 1, 2**16)),
    "NoiseAwareClassifier.grad_log_prob": Spec(lambda x, sigma, y: clf().grad_log_prob(x, sigma, y),
                                               x=X(finite=False), sigma=sigma(), y=Labels(B, 3)),
    "build_model": Spec(lambda kind: nn.build_model(kind, dim=2, hidden=[4]), kind=Choice("MLPDenoiser")),
    "cross_entropy": Spec(nn.cross_entropy, logits=X((B, 3)), y=Labels(B, 3)),
    # nn: attention, text, DiT, autoencoder (other engineers' modules, fuzzed with the same kinds)
    "MultiHeadAttention": Spec(lambda dim, num_heads, dtype: nn.MultiHeadAttention(dim, num_heads, dtype=dtype),
                               dim=Int(8, 1, 2**16), num_heads=Int(2, 1, 8), dtype=Dtype()),
    "MultiHeadAttention.__call__": Spec(lambda x: nn.MultiHeadAttention(4, 2, dtype="float64", seed=0)(x),
                                        x=X((2, 3, 4), finite=False)),
    "FeedForward": Spec(lambda dim, hidden_dim, activation: nn.FeedForward(dim, hidden_dim, activation),
                        dim=Int(4, 1, 2**16), hidden_dim=Int(8, 1, 2**16), activation=Choice("gelu")),
    "FeedForward.__call__": Spec(lambda x: nn.FeedForward(4, 8, dtype="float64", seed=0)(x),
                                 x=X((2, 3, 4), finite=False, ndim_fixed=False)),
    "TransformerBlock": Spec(lambda dim, num_heads: nn.TransformerBlock(dim, num_heads), dim=Int(8, 1, 2**16),
                             num_heads=Int(2, 1, 8)),
    "TransformerBlock.__call__": Spec(lambda x: nn.TransformerBlock(4, 2, dtype="float64", seed=0)(x),
                                      x=X((2, 3, 4), finite=False)),
    "Tokenizer": Spec(lambda max_length: md.Tokenizer(["[PAD]", "[UNK]", "[NULL]", "a", "b"], max_length),
                      max_length=Int(4, 1)),
    "Tokenizer.encode": Spec(lambda unknown: md.Tokenizer(["[PAD]", "[UNK]", "[NULL]", "a", "b"], 4).encode(
        ["a b", "c"], unknown), unknown=Choice("unk")),
    "TextEncoder": Spec(lambda vocab_size, max_length, dim: md.TextEncoder(vocab_size, max_length, dim, depth=1,
                                                                           num_heads=2),
                        vocab_size=Int(6, 1), max_length=Int(4, 1), dim=Int(8, 1, 2**16)),
    "TextEncoder.__call__": Spec(lambda ids: md.TextEncoder(6, 4, 8, depth=1, num_heads=2, dtype="float64")(ids),
                                 ids=Labels(2, 6, fixed_batch=False, shape=(2, 3))),
    "AdaLayerNorm": Spec(nn.dit.AdaLayerNorm, dim=Int(3, 1, 2**16), eps=Real(1e-5, 0.0, 1.0, True), dtype=Dtype()),
    "AdaLayerNorm.__call__": Spec(lambda x, shift, scale: nn.dit.AdaLayerNorm(3, dtype="float64")(x, shift, scale),
                                  x=X((2, 4, 3), finite=False), shift=X((2, 3), finite=False),
                                  scale=X((2, 3), finite=False)),
    "DiTBlock": Spec(lambda dim, num_heads: nn.DiTBlock(dim, num_heads), dim=Int(8, 1, 2**16), num_heads=Int(2, 1, 8)),
    "DiTDenoiser": Spec(lambda channels, image_size, patch_size: nn.DiTDenoiser(channels, image_size, patch_size, dim=8,
                                                                                depth=1, num_heads=2),
                        channels=Int(1, 1, 2**16), image_size=Int(4, 1, 2**16), patch_size=Int(2, 1, 4)),
    "DiTDenoiser.__call__": Spec(lambda x, sigma: nn.DiTDenoiser(1, 4, 2, dim=8, depth=1, num_heads=2,
                                                                dtype="float64")(x, sigma),
                                 x=X((2, 1, 4, 4), finite=False), sigma=sigma()),
    "Autoencoder": Spec(lambda channels, latent_channels: nn.Autoencoder(channels, latent_channels, 4, (1,)),
                        channels=Int(1, 1, 2**16), latent_channels=Int(2, 1, 2**16)),
    "Autoencoder.encode": Spec(lambda x: nn.Autoencoder(1, 2, 4, (1,), dtype="float64").encode(x),
                               x=X((2, 1, 4, 4), finite=False)),
    "SuperResDenoiser": Spec(lambda channels, factor: nn.SuperResDenoiser(channels, factor, 4, (1,), groups=2),
                             channels=Int(1, 1, 2**16), factor=Int(2, 1, 64)),
    "SuperResDenoiser.__call__": Spec(lambda x, sigma, low_res: nn.SuperResDenoiser(
        1, 2, 4, (1,), groups=2, dtype="float64")(x, sigma, low_res), x=X((2, 1, 4, 4), finite=False), sigma=sigma(),
        low_res=X((2, 1, 2, 2), finite=False)),
    # preconditioning
    "Preconditioning": Spec(md.Preconditioning, kind=Choice("edm"), sigma_data=Real(0.5, 0.0, None, True)),
    "PreconditionedDenoiser": Spec(md.PreconditionedDenoiser, model=Fn(mlp),
                                   precond=Fn(lambda: md.Preconditioning("edm"))),
    "PreconditionedDenoiser.__call__": Spec(lambda x, sigma: md.PreconditionedDenoiser(
        mlp(), md.Preconditioning("edm"))(x, sigma), x=X(finite=False), sigma=sigma()),
    "LogNormalSigmas": Spec(md.LogNormalSigmas, p_mean=Real(-1.2, -30.0, 30.0), p_std=Real(1.2, 0.0, 10.0, True)),
    "LogNormalSigmas.sample_sigmas": Spec(lambda n, rng, dtype: md.LogNormalSigmas().sample_sigmas(n, rng, dtype),
                                          n=Int(4, 1), rng=Rng(), dtype=Dtype()),
    # latent diffusion and the super-resolution cascade (minidiff.latent, minidiff.cascade)
    "AutoencoderConfig": Spec(lambda steps, lr, beta: latent.AutoencoderConfig(steps=steps, lr=lr, beta=beta),
                              steps=Int(10, 1), lr=Real(1e-3, 0.0, None, True), beta=Real(1e-3, 0.0, None)),
    "train_autoencoder": Spec(lambda data, lr, batch_size: list(latent.train_autoencoder(
        ae(), data, steps=2, lr=lr, batch_size=batch_size)), data=X((8, 1, 4, 4)), lr=Real(1e-3, 0.0, 1e3, True),
        batch_size=Int(4, 1)),
    "encode_latents": Spec(lambda x, batch_size: latent.encode_latents(ae(), x, batch_size=batch_size),
                           x=X((3, 1, 4, 4)), batch_size=Int(2, 1)),
    "decode_latents": Spec(lambda z0, scale, shift: latent.decode_latents(ae(), z0, scale, shift),
                           z0=X((3, 2, 2, 2)), scale=Real(1.0, 0.0, None, True), shift=Real(0.0)),
    "latent_scale": Spec(latent.latent_scale, z=X((3, 2, 2, 2), ndim_fixed=False)),
    "super_resolve": Spec(lambda low_res, sigmas, aug_sigma: cascade.super_resolve(
        nn.SuperResDenoiser(1, 2, 4, (1,), groups=2, dtype="float64"), low_res, sigmas, aug_sigma=aug_sigma),
        low_res=X((2, 1, 2, 2)), sigmas=Grid([10.0, 1.0, 0.0], 0.0, 1e15), aug_sigma=Real(0.1, 0.0, 1e15)),
    "train_super_resolution": Spec(lambda data, lr, aug_max: list(cascade.train_super_resolution(
        nn.SuperResDenoiser(1, 2, 4, (1,), groups=2), data, md.Schedule.log_linear(T=10), steps=2, batch_size=2,
        lr=lr, aug_max=aug_max)), data=X((4, 1, 4, 4)), lr=Real(1e-3, 0.0, 1e3, True), aug_max=Real(0.5, 0.0)),
    # nn: optimisation
    "SGD": Spec(nn.SGD, params=Const(params), lr=Real(0.1, 0.0, 1e3), momentum=Real(0.9, 0.0, 1.0, False, True)),
    "Adam": Spec(nn.Adam, params=Const(params), lr=Real(0.1, 0.0, 1e3), eps=Real(1e-8, 0.0, 1.0, True),
                 weight_decay=Real(0.0, 0.0, 1e3)),
    "AdamW": Spec(nn.AdamW, params=Const(params), lr=Real(0.1, 0.0, 1e3), weight_decay=Real(0.01, 0.0, 1e3)),
    "clip_grad_norm": Spec(nn.clip_grad_norm, params=Const(with_grads), max_norm=Real(1.0, 0.0, None, True, allowed=(math.inf,))),
    "warmup_cosine_lr": Spec(nn.warmup_cosine_lr, step=Int(3, 0), total_steps=Int(10, 1), base_lr=Real(0.1, 0.0, 1e3),
                             warmup_steps=Int(2, 0), min_lr=Real(0.0, 0.0, 1e3)),
    "EMA": Spec(nn.EMA, model=Fn(mlp), decay=Real(0.9, 0.0, 1.0, False, True)),
    "gradcheck": Spec(lambda x, eps, max_entries: nn.gradcheck(nn.Linear(D, 3, dtype="float64", seed=0), x, eps=eps,
                                                               max_entries=max_entries),
                      x=X(ndim_fixed=False), eps=Real(1e-6, 1e-12, 1e-1), max_entries=Int(8, 1, 10**6)),
    # checkpoints
    "save_checkpoint": Spec(lambda path, model: md.save_checkpoint(path, model), path=WritePath(), model=Fn(mlp)),
    # training
    "train": Spec(lambda data, lr, batch_size, grad_clip, seed: list(md.train(
        mlp(), data, md.Schedule.log_linear(T=10), steps=2, lr=lr, batch_size=batch_size, grad_clip=grad_clip,
        seed=seed)), data=X((16, D)), lr=Real(1e-3, 0.0, 1e3, True), batch_size=Int(4, 1, 2**24),
        grad_clip=Real(1.0, allowed=(None,)), seed=Int(0, 0, 2**31 - 1)),
    "fit": Spec(lambda data, callback: md.fit(md.TrainConfig(steps=2, batch_size=8, hidden=(8,), T=10), data=data,
                                             progress=False, callback=callback),
                data=X((16, D), none_ok=True), callback=Fn(lambda: (lambda m: None), none_ok=True)),
    "TrainConfig": Spec(lambda lr, steps, grad_clip, sigma_max: md.TrainConfig(lr=lr, steps=steps, grad_clip=grad_clip,
                                                                              sigma_max=sigma_max),
                        lr=Real(0.01, 0.0, 1e3, True), steps=Int(10, 1), grad_clip=Real(1.0),
                        sigma_max=Real(80.0, 0.005, 1e15, True)),
}

# Public names that are not fuzzed here, and why.
NOT_FUZZED = {
    "asarray": "backend plumbing: converts anything NumPy/CuPy can convert",
    "default_rng": "backend plumbing (a seed or a Generator, as NumPy's)",
    "get_xp": "backend plumbing", "to_numpy": "backend plumbing", "cupy_available": "no arguments",
    "get_backend": "no arguments", "set_backend": "tested in test_backend", "use_backend": "tested in test_backend",
    "list_datasets": "no arguments",
    "Checkpoint": "a result record", "TrainResult": "a result record", "SamplerState": "a result record",
    "Reversal": "a result record", "GradcheckResult": "a result record", "NonFiniteLossError": "an exception",
    "ScheduleWarning": "a warning", "Module": "abstract base class", "Parameter": "a plain container",
    "load_checkpoint": "fuzzed with tampered files in test_checkpoint and test_cli_bad_input",
    "load": "= load_checkpoint", "save": "= save_checkpoint",
    "load_data": "reads user files: tested in test_cli_bad_input",
    "fit_autoencoder": "trains for minutes by default; its pieces (AutoencoderConfig, train_autoencoder) are fuzzed",
    "load_autoencoder": "a checkpoint reader: load_checkpoint's checks",
    "ReLU": "no arguments", "SiLU": "no arguments", "GELU": "no arguments", "Tanh": "no arguments",
    "Upsample": "no arguments", "Downsample": "no arguments",
    "GlyphReader": "a classifier with the denoisers' validators (check_array, check_positive_int); its shapes "
                   "and bad input are tested in test_reader",
    "TextConditionedDenoiser": "wraps a TextEncoder and a denoiser that validate their own inputs; prompts "
                               "and ids are tested in test_t2i",
    "generate": "prompts (unknown words, too long, empty) and sizes are tested in test_t2i",
    "load_text_model": "a checkpoint loader: = load_checkpoint plus a class check",
    "glyph_fid": "= features + feature_fid + precision_recall (test_fid)",
    "GlyphFeatures": "a trained feature map: GlyphFeatures.train is exercised in test_fid",
}


# ----------------------------------------------------------------------------- the tests
def _public_callables():
    names = set()
    for mod in (md, nn, latent, cascade):
        for n in (getattr(mod, "__all__", None) or dir(mod)):
            obj = getattr(mod, n)
            if n.startswith("_") or inspect.ismodule(obj) or not callable(obj):
                continue
            if isinstance(obj, type) and issubclass(obj, BaseException):
                names.add(n)
                continue
            names.add(n)
    return names


def test_every_public_callable_is_fuzzed_or_excused():
    covered = {k.split(".")[0] for k in SPECS} | set(NOT_FUZZED)
    missing = sorted(_public_callables() - covered)
    assert not missing, (f"public names without a fuzz spec: {missing}; add them to SPECS in tests/test_fuzz.py "
                         f"(or to NOT_FUZZED with a reason)")


def _arrays(kwargs):
    return {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}


def _same(a, b):
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")


def _finite(result):
    """True when every number in the result (array, float, tuple/list/dict of them, a dataclass) is finite."""
    if isinstance(result, np.ndarray):
        return result.dtype.kind not in "fc" or bool(np.isfinite(result).all())
    if isinstance(result, (float, np.floating)):
        return math.isfinite(result)
    if isinstance(result, (list, tuple)):
        return all(_finite(r) for r in result)
    if isinstance(result, dict):
        return all(_finite(r) for r in result.values())
    if hasattr(result, "__dataclass_fields__"):
        return all(_finite(getattr(result, f)) for f in result.__dataclass_fields__)
    return True


def _call(spec, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ScheduleWarning etc. are not the subject here
        return spec.call(**kwargs)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_valid_call_is_finite_and_leaves_inputs_alone(name):
    spec = SPECS[name]
    for extra in [{}] + list(spec.extreme):
        kwargs = {**spec.valid_kwargs(), **extra}
        before = _arrays(kwargs)
        result = _call(spec, kwargs)
        assert _finite(result), (name, extra)
        for k, a in before.items():
            assert _same(kwargs[k], a), f"{name} changed its argument {k}"


FUZZED = sorted(n for n, s in SPECS.items() if any(not isinstance(v, Const) for v in s.slots.values()))


@pytest.mark.parametrize("name", FUZZED)
# half the profile's examples per function: ci 25 x ~130 functions ~ 3000 bad calls in ~30 s on 2 cores;
# HYPOTHESIS_PROFILE=thorough gives 500 per function
@settings(max_examples=max(1, settings().max_examples // 2))
@given(data=st.data())
def test_bad_argument_is_a_value_or_type_error(name, data):
    spec = SPECS[name]
    fuzzable = sorted(k for k, v in spec.slots.items() if not isinstance(v, Const))
    slot = data.draw(st.sampled_from(fuzzable), label="argument")
    kwargs = spec.valid_kwargs()
    kwargs[slot] = data.draw(spec.slots[slot].bad, label=slot)
    before = _arrays(kwargs)
    try:
        result = _call(spec, kwargs)
    except (ValueError, TypeError):
        pass
    else:
        pytest.fail(f"{name}({slot}={kwargs[slot]!r:.80}) returned {type(result).__name__} instead of raising")
    for k, a in before.items():
        assert a.dtype == object or _same(kwargs[k], a), f"{name} changed its argument {k}"


def test_big_endian_and_numpy_scalars_are_accepted():
    x = X().valid()
    eps = X().valid()
    ref = md.add_noise_ve(x, 0.5, eps)
    assert np.array_equal(md.add_noise_ve(x.astype(">f8"), np.float32(0.5), eps.astype(">f8")), ref)
    assert md.TrainConfig(lr=np.float32(0.01)).lr == pytest.approx(0.01)
    assert np.isfinite(md.IdealDenoiser(np.zeros((5, 2)))(x, 1.0)).all()  # all data at the origin
    res = md.fit(md.TrainConfig(steps=2, batch_size=8, hidden=(8,), T=10), data=np.zeros((16, 2)), progress=False)
    assert all(math.isfinite(v) for v in res.losses)  # was refused with a message about "data_rms"
