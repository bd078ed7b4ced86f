r"""Guidance: turn a conditional model or a classifier into a plain denoiser ``(x, sigma) -> eps``.

Both functions return a callable with the samplers' calling convention, so any method of
:mod:`minidiff.samplers` can be guided (docs/math.md §10)::

    den = classifier_free(model, y, w=3.0)                    # Ho & Salimans 2022 (w = 1: no guidance)
    den = classifier_guidance(uncond, classifier, y, scale=2)   # Dhariwal & Nichol 2021
    x0 = samplers.sample(den, sigmas, x)

Labels ``y`` are fixed when the guided denoiser is built: an int array (B,) on the backend of the
samples, one label per row of every ``x`` it will see.
"""
from __future__ import annotations

import numbers

from . import backend
from ._validate import INT_MAX, check_callable, check_int, check_labels, check_real, sigma_like

__all__ = ["classifier_free", "classifier_guidance"]


def _check_labels(y, owner):
    """Labels (B,) with B >= 1, within the owner's classes when it says how many it has."""
    y = check_labels(y, "y", int(getattr(owner, "num_classes", None) or INT_MAX))
    if y.shape[0] < 1:
        raise ValueError("y must have shape (B,) with B >= 1; got (0,)")
    return y


def _check_batch(x, y):
    if getattr(x, "ndim", 0) < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must have batch size B = {y.shape[0]} (len(y)); got shape {tuple(getattr(x, 'shape', ()))}")


def classifier_free(cond_denoiser, y, w, null_label=None):
    r"""Classifier-free guidance (Ho & Salimans 2022), in the Imagen / diffusers convention
    (docs/math.md §10)::

        eps = eps_u + w (eps_c - eps_u),   eps_c = eps(x, s, y),  eps_u = eps(x, s, null)

    w = 1 is the conditional model, w = 0 the unconditional one, w > 1 extrapolates away from
    the unconditional prediction. Ho & Salimans' Eq. 6 writes the same combination as
    ``(1 + w') eps_c - w' eps_u`` with ``w' = w - 1``: their weight is one less than this one
    (their w' = 0 is the plain conditional model). Both predictions come from ONE call of batch 2B with labels
    ``[y, null]`` (and the noise levels repeated when they are given per sample).

    Parameters
    ----------
    cond_denoiser : callable ``(x, sigma, y=labels) -> eps_hat`` (a class-conditional model of
        :mod:`minidiff.nn`, trained with label dropout to the null label).
    y : int array (B,), the class of each row; or, for a text-conditioned model (one with
        ``null_ids``, e.g. :class:`minidiff.t2i.TextConditionedDenoiser`), the prompts' token ids (B, S),
        the null condition being the empty prompt ``null_ids`` (docs/attention.md §9).
    w : guidance weight, a finite float.
    null_label : the unconditional label; defaults to ``cond_denoiser.num_classes``.

    Returns
    -------
    denoiser ``(x, sigma) -> eps`` with x of shape (B, ...).
    """
    check_callable(cond_denoiser, "cond_denoiser")
    w = check_real(w, "w")
    null_ids = getattr(cond_denoiser, "null_ids", None)
    if null_ids is not None and getattr(y, "ndim", None) == 2:  # a prompt per row: token ids (B, S)
        return _classifier_free_text(cond_denoiser, y, w, null_ids)
    y = _check_labels(y, cond_denoiser)
    if null_label is None:
        null_label = getattr(cond_denoiser, "num_classes", None)
        if null_label is None:
            raise ValueError("null_label must be given when cond_denoiser has no num_classes attribute")
    null_label = check_int(null_label, "null_label", minimum=0)
    xp = backend.get_xp(y)
    labels = xp.concatenate([y, xp.full(y.shape, null_label, dtype=y.dtype)])  # (B,) + (B,) -> (2B,)

    def guided(x, sigma):
        _check_batch(x, y)
        B = x.shape[0]
        x2 = xp.concatenate([x, x], axis=0)  # (B, ...) -> (2B, ...)
        if isinstance(sigma, numbers.Real) or getattr(sigma, "ndim", None) == 0:
            sigma2 = sigma
        else:
            sigma2 = xp.concatenate([sigma, sigma])  # (B,) -> (2B,)
        eps = cond_denoiser(x2, sigma2, y=labels)
        if getattr(eps, "shape", None) != x2.shape:
            raise ValueError(f"cond_denoiser must return shape {tuple(x2.shape)}; got {getattr(eps, 'shape', None)}")
        eps_c, eps_u = eps[:B], eps[B:]  # (2B, ...) -> (B, ...), (B, ...)
        return eps_u + w * (eps_c - eps_u)

    return guided


def _classifier_free_text(model, ids, w, null_ids):
    """Classifier-free guidance over prompts: rows ``[ids, null]`` in one call of batch 2B."""
    xp = backend.get_xp(ids)
    if ids.dtype.kind not in "iu" or ids.shape[0] < 1 or ids.shape[1] != null_ids.shape[0]:
        raise ValueError(f"y must be token ids of shape (B, {null_ids.shape[0]}) with B >= 1; got "
                         f"{ids.dtype} {tuple(ids.shape)}")
    B = ids.shape[0]
    rows = xp.concatenate([ids, xp.broadcast_to(null_ids[None, :], ids.shape)])  # (2B, S): prompts | null

    def guided(x, sigma):
        if getattr(x, "ndim", 0) < 1 or x.shape[0] != B:
            raise ValueError(f"x must have batch size B = {B} (rows of y); got shape {tuple(getattr(x, 'shape', ()))}")
        x2 = xp.concatenate([x, x], axis=0)  # (B, ...) -> (2B, ...)
        sigma2 = sigma if isinstance(sigma, numbers.Real) or getattr(sigma, "ndim", None) == 0 else \
            xp.concatenate([sigma, sigma])  # (B,) -> (2B,)
        eps = model(x2, sigma2, y=rows)
        eps_c, eps_u = eps[:B], eps[B:]  # (2B, ...) -> (B, ...), (B, ...)
        return eps_u + w * (eps_c - eps_u)

    return guided


def classifier_guidance(denoiser, classifier, y, scale):
    r"""Classifier guidance (Dhariwal & Nichol 2021, Alg. 2 in eps form; docs/math.md §10)::

        eps = eps_hat(x, s) - s * scale * grad_x log p(y | x, s)

    With score = -eps / s this adds ``scale * grad log p(y | x)`` to the score: by Bayes,
    scale = 1 turns the unconditional score into the exact conditional one
    (grad log p(x | y) = grad log p(x) + grad log p(y | x)); scale > 1 sharpens toward y.

    Parameters
    ----------
    denoiser : ``(x, sigma) -> eps_hat`` (unconditional, or already guided).
    classifier : object with ``grad_log_prob(x, sigma, y) -> d/dx log p(y | x, sigma)`` of the
        shape of x (e.g. :class:`minidiff.nn.NoiseAwareClassifier`, whose backward pass gives it).
    y : int array (B,), the target class of each row.
    scale : guidance scale, a finite float.
    """
    check_callable(denoiser, "denoiser")
    if not callable(getattr(classifier, "grad_log_prob", None)):
        raise TypeError("classifier must have a grad_log_prob(x, sigma, y) method")
    y = _check_labels(y, classifier)
    scale = check_real(scale, "scale")

    def guided(x, sigma):
        _check_batch(x, y)
        s = sigma_like(sigma, x)  # float, or (B, 1, ..., 1)
        eps = denoiser(x, sigma)
        grad = classifier.grad_log_prob(x, sigma, y)
        if getattr(grad, "shape", None) != x.shape:
            raise ValueError(f"classifier.grad_log_prob must return the shape of x {tuple(x.shape)}; "
                             f"got {getattr(grad, 'shape', None)}")
        return eps - (s * scale) * grad

    return guided
