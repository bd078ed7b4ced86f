"""minidiff: diffusion models from scratch in NumPy/CuPy, with hand-written backprop.

The public API, flat (see the README's package map for where each piece lives)::

    import minidiff as md
    data = md.get_dataset("spiral").sample(2000, md.default_rng(0))
    sigmas = md.Schedule.log_linear(0.01, 80.0).sampling_sigmas(20)
    x = sigmas[0] * md.default_rng(1).standard_normal((500, 2))
    x = md.sample(md.IdealDenoiser(data), sigmas, x, method="gradient_estimation")

Plotting and the command line (``minidiff.plotting``, ``minidiff.cli``) are not imported
here, so ``import minidiff`` stays free of matplotlib.
"""
__version__ = "0.1.0"

from ._threads import apply_default_blas_threads as _apply_default_blas_threads

_apply_default_blas_threads()  # before anything imports NumPy; see minidiff/_threads.py

from . import nn  # noqa: F401
from .backend import (  # noqa: F401
    asarray, cupy_available, default_rng, get_backend, get_xp, set_backend, to_numpy, use_backend,
)
from .datasets import DATASETS, get_dataset, list_datasets  # noqa: F401
from .forward import (  # noqa: F401
    add_noise_ve, add_noise_vp, ddpm_posterior, eps_from_score, eps_from_v, eps_from_x0, random_walk,
    random_walk_marginal_std, score_from_eps, v_from_eps, ve_to_vp, vp_chain, vp_chain_marginal,
    vp_to_ve, x0_from_eps, x0_from_v,
)
from .guidance import classifier_free, classifier_guidance  # noqa: F401
from .ideal import IdealDenoiser, dist, project  # noqa: F401
from .metrics import (  # noqa: F401
    GlyphFeatures, feature_fid, frechet_distance, gaussian_fit, glyph_fid, knn, knn_distances, manifold_distance,
    memorization_rate, mmd_rbf, precision_recall, sliced_wasserstein,
)
from .nn import (  # noqa: F401
    EMA, SGD, Adam, AdamW, Checkpoint, FeedForward, MLPDenoiser, MultiHeadAttention, NoiseAwareClassifier,
    TransformerBlock, UNetDenoiser, build_model, clip_grad_norm, cross_entropy, gradcheck, warmup_cosine_lr,
)
from .nn import load as load_checkpoint, save as save_checkpoint  # noqa: F401
from .precond import PARAMETRIZATIONS, LogNormalSigmas, PreconditionedDenoiser, Preconditioning  # noqa: F401
from .reversal import Reversal, reverse_point_clouds  # noqa: F401
from .samplers import (  # noqa: F401
    METHODS, CountingDenoiser, SamplerState, ddim_vp, ddpm_ancestral_vp, denoise_once, iter_sample, sample,
)
from .schedules import (  # noqa: F401
    Schedule, ScheduleWarning, alpha_bars, alpha_bars_from_sigmas, betas_from_alpha_bars, cosine_betas,
    karras_sigmas, linear_betas, log_linear_sigmas, log_snr, scaled_linear_betas, sigmas_from_alpha_bars,
    sigmas_from_betas, timesteps,
)
from .runs import TrainConfig, TrainResult, fit, load_data  # noqa: F401
from .text import TextEncoder, Tokenizer  # noqa: F401
from .training import NonFiniteLossError, train  # noqa: F401
from .t2i import TextConditionedDenoiser, generate, load_text_model  # noqa: F401  (registers the model class)
