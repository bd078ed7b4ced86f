r"""Toy data sets on known manifolds, with exact projection where it exists, and glyph digits.

Every data set is an object with

- ``dim`` (flat dimension) and ``shape`` (one item's shape: ``(dim,)`` for point sets,
  ``(1, H, W)`` for images),
- ``num_classes`` (``None`` when unlabelled),
- ``sample(n, rng=None, return_labels=False)`` -> array (n, *shape) on the default backend
  (and int64 labels (n,) in 0..num_classes-1 when asked),
- ``has_projection`` and, when True, ``project(x)`` (nearest point of the true manifold) and
  ``distance(x)`` (distance to it, shape (n,)); otherwise both raise NotImplementedError.

Scale: the point sets live roughly in [-2, 2] with per-coordinate std ~1, so a default
sigma_max ~80 dominates them (docs/math.md §2: the terminal noise must dominate the data).

Curve data sets (spiral, swiss roll, moons, circles, spiral arms) are clean 1-D curves by
default (``noise=0``), so the distance to the manifold of generated samples is meaningful;
pass ``noise > 0`` for a Gaussian-blurred version (the projection stays that of the clean
curve). The curve parameter t is drawn uniformly (not uniformly in arc length: the inner
turns of a spiral are slightly denser — a documented simplification).

Projection onto a parametric curve c(t), t in [t0, t1]: nearest point of a dense grid of
t (chunked brute force), then safeguarded Newton steps on f(t) = |c(t) - x|^2 / 2 inside the
bracket of +-1 grid spacing (clipped to [t0, t1]). Exact formulae are used for circles,
moons (arcs), the sphere and the torus.

Generation and projection use ``xp`` from :mod:`minidiff.backend` (NumPy or CuPy); glyph
rendering is host code (matplotlib Agg + NumPy/SciPy) followed by one explicit
``backend.asarray`` copy. Data sets are not hot paths.
"""
from __future__ import annotations

import math

import numpy  # host code: glyph rendering and the random rotation of EmbeddedManifold

from . import backend
from ._validate import check_array, check_choice, check_positive_int, check_real, check_rng

__all__ = [
    "Dataset", "Spiral", "SwissRoll", "TwoMoons", "Circles", "EightGaussians", "Checkerboard",
    "SpiralArms", "SwissRoll3D", "Torus", "Sphere", "EmbeddedManifold", "GlyphDigits",
    "DATASETS", "NoProjectionError", "get_dataset", "list_datasets",
]


# Scale parameters (noise, radii, std) are bounded so that samples stay far from float overflow.
_MAX_SCALE = 1e6
MAX_N = 10**7  # most items one sample() call draws


class NoProjectionError(NotImplementedError, ValueError):
    """The data set has no closed-form projection (a NotImplementedError, and a ValueError for the
    bad-input contract: asking for it is a wrong argument)."""


class Dataset:
    """Base class: validation of ``n``/``rng``, the NotImplementedError projection."""

    name = "dataset"
    num_classes = None
    has_projection = False
    shape: tuple = ()

    @property
    def dim(self) -> int:
        return int(math.prod(self.shape))

    def sample(self, n, rng=None, return_labels=False):
        """``n`` items (n, *shape) on the default backend; with labels (n,) int64 if asked."""
        n = check_positive_int(n, "n", maximum=MAX_N)
        if return_labels and self.num_classes is None:
            raise ValueError(f"return_labels=True but data set {self.name!r} is unlabelled")
        rng = check_rng(rng, xp=backend.get_xp())  # the default backend: a generator of the other is a TypeError
        x, y = self._sample(n, rng)
        return (x, y) if return_labels else x

    def _check_x(self, x):
        check_array(x, "x")
        if tuple(x.shape[1:]) != self.shape or x.ndim != len(self.shape) + 1:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.shape))}); got {tuple(x.shape)}")
        return x

    def project(self, x):
        """Nearest point of the true manifold, shape like ``x``."""
        raise NoProjectionError(f"data set {self.name!r} has no closed-form projection")

    def distance(self, x):
        """Euclidean distance of each row of ``x`` to the true manifold, shape (B,)."""
        if not self.has_projection:
            raise NoProjectionError(f"data set {self.name!r} has no closed-form projection")
        x = self._check_x(x)
        xp = backend.get_xp(x)
        diff = (x - self.project(x)).reshape(x.shape[0], -1)  # (B, ...) -> (B, D)
        return xp.sqrt(xp.sum(diff * diff, axis=1))


# ---------------------------------------------------------------------------------- curves
class _Curve:
    """One parametric piece c(t), t in [t0, t1], with derivatives for Newton refinement."""

    def __init__(self, c, dc, ddc, t0, t1):
        self.c, self.dc, self.ddc, self.t0, self.t1 = c, dc, ddc, float(t0), float(t1)

    def project(self, x, n_grid=4096, newton_steps=6, chunk=512):
        """Nearest point of the piece to each row of x (B, 2); returns (points (B, 2), d2 (B,))."""
        xp = backend.get_xp(x)
        tg = xp.linspace(self.t0, self.t1, n_grid, dtype=x.dtype)  # (G,)
        pg = self.c(tg)  # (G, 2)
        half_sq = 0.5 * xp.sum(pg * pg, axis=1)  # (G,)
        t = xp.empty((x.shape[0],), dtype=x.dtype)
        for s in range(0, x.shape[0], chunk):
            score = half_sq - x[s:s + chunk] @ pg.T  # |p|^2/2 - x.p, (b, 2) @ (2, G) -> (b, G)
            t[s:s + chunk] = tg[xp.argmin(score, axis=1)]
        h = (self.t1 - self.t0) / (n_grid - 1)
        lo, hi = xp.maximum(t - h, self.t0), xp.minimum(t + h, self.t1)
        for _ in range(newton_steps):
            r = self.c(t) - x  # (B, 2)
            d1, d2 = self.dc(t), self.ddc(t)
            g = xp.sum(d1 * r, axis=1)  # f'(t)
            H = xp.sum(d1 * d1, axis=1) + xp.sum(d2 * r, axis=1)  # f''(t)
            step = xp.where(H > 0, g / xp.where(H > 0, H, 1.0), xp.sign(g) * h)
            t = xp.clip(t - step, lo, hi)
        p = self.c(t)
        return p, xp.sum((p - x) ** 2, axis=1)


def _spiral_piece(a, t0, t1, phase=0.0):
    """c(t) = a t (cos(t + phase), sin(t + phase)): an Archimedean spiral."""
    def c(t):
        xp = backend.get_xp(t)
        return a * xp.stack([t * xp.cos(t + phase), t * xp.sin(t + phase)], axis=1)

    def dc(t):
        xp = backend.get_xp(t)
        co, si = xp.cos(t + phase), xp.sin(t + phase)
        return a * xp.stack([co - t * si, si + t * co], axis=1)

    def ddc(t):
        xp = backend.get_xp(t)
        co, si = xp.cos(t + phase), xp.sin(t + phase)
        return a * xp.stack([-2 * si - t * co, 2 * co - t * si], axis=1)

    return _Curve(c, dc, ddc, t0, t1)


class _CurveSet(Dataset):
    """Union of parametric pieces in R^2; the label of a point is the index of its piece."""

    has_projection = True
    shape = (2,)

    def __init__(self, pieces, noise=0.0, labelled=False):
        self.pieces, self.noise = pieces, check_real(noise, "noise", 0.0, _MAX_SCALE)
        self.num_classes = len(pieces) if labelled else None

    def _sample(self, n, rng):
        xp = backend.get_xp()
        y = rng.integers(0, len(self.pieces), size=n)
        u = rng.random(n)
        x = xp.empty((n, 2))
        for k, pc in enumerate(self.pieces):
            sel = y == k
            x[sel] = pc.c(pc.t0 + (pc.t1 - pc.t0) * u[sel])
        if self.noise > 0:
            x += self.noise * rng.standard_normal((n, 2))
        return x, y.astype("int64")

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        best_p, best_d2 = None, None
        for pc in self.pieces:
            p, d2 = pc.project(x)
            if best_p is None:
                best_p, best_d2 = p, d2
            else:
                closer = d2 < best_d2
                best_p = xp.where(closer[:, None], p, best_p)
                best_d2 = xp.where(closer, d2, best_d2)
        return best_p.astype(x.dtype, copy=False)


class Spiral(_CurveSet):
    """Archimedean spiral c(t) = a t (cos t, sin t), t in [pi, 4 pi] (1.5 turns); max radius 2."""

    name = "spiral"

    def __init__(self, noise=0.0):
        super().__init__([_spiral_piece(2.0 / (4 * math.pi), math.pi, 4 * math.pi)], noise)


class SwissRoll(_CurveSet):
    """2-D swiss roll (the classic t (cos t, sin t), t in [1.5 pi, 4.5 pi]), scaled to radius 2."""

    name = "swiss_roll"

    def __init__(self, noise=0.0):
        super().__init__([_spiral_piece(2.0 / (4.5 * math.pi), 1.5 * math.pi, 4.5 * math.pi)], noise)


class SpiralArms(_CurveSet):
    """``num_arms`` spiral arms rotated by 2 pi k / num_arms; label = arm (class conditioning)."""

    name = "spiral_arms"

    def __init__(self, num_arms=3, noise=0.0):
        num_arms = check_positive_int(num_arms, "num_arms", minimum=2, maximum=10**4)
        a, t0, t1 = 2.0 / (2.5 * math.pi), 0.5 * math.pi, 2.5 * math.pi
        super().__init__([_spiral_piece(a, t0, t1, 2 * math.pi * k / num_arms) for k in range(num_arms)],
                         noise, labelled=True)


def _arc_piece(cx, cy, r, a0, a1):
    """Circular arc c(t) = (cx, cy) + r (cos t, sin t), t in [a0, a1]."""
    def c(t):
        xp = backend.get_xp(t)
        return xp.stack([cx + r * xp.cos(t), cy + r * xp.sin(t)], axis=1)

    def dc(t):
        xp = backend.get_xp(t)
        return r * xp.stack([-xp.sin(t), xp.cos(t)], axis=1)

    def ddc(t):
        xp = backend.get_xp(t)
        return -r * xp.stack([xp.cos(t), xp.sin(t)], axis=1)

    return _Curve(c, dc, ddc, a0, a1)


class TwoMoons(_CurveSet):
    """Two interleaved half circles (radius 4/3, x in [-2, 2]), centred; label = moon. Projection onto arcs
    uses the generic grid + Newton search (exact to ~1e-12 for these smooth pieces)."""

    name = "moons"

    def __init__(self, noise=0.0):
        r = 4.0 / 3.0
        super().__init__([_arc_piece(-0.5 * r, -0.25 * r, r, 0.0, math.pi),
                          _arc_piece(0.5 * r, 0.25 * r, r, math.pi, 2 * math.pi)], noise, labelled=True)


class Circles(_CurveSet):
    """Concentric circles of the given radii; label = circle. Exact projection x r / |x|."""

    name = "circles"

    def __init__(self, radii=(0.75, 1.5), noise=0.0):
        if isinstance(radii, (str, bytes)) or not hasattr(radii, "__len__") or len(radii) == 0:
            raise TypeError(f"radii must be a non-empty sequence of floats in (0, {_MAX_SCALE:g}]; got {radii!r}")
        radii = tuple(check_real(r, f"radii[{i}]", 0.0, _MAX_SCALE, low_open=True) for i, r in enumerate(radii))
        self.radii = radii
        super().__init__([_arc_piece(0.0, 0.0, r, 0.0, 2 * math.pi) for r in radii], noise,
                         labelled=len(radii) > 1)

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        rho = xp.sqrt(xp.sum(x * x, axis=1, keepdims=True))  # (B, 1)
        # the origin is equidistant from a whole circle: pick the direction (1, 0)
        u = xp.where(rho > 0, x / xp.where(rho > 0, rho, 1.0), xp.asarray([1.0, 0.0], dtype=x.dtype))
        radii = xp.asarray(self.radii, dtype=x.dtype)  # (R,)
        k = xp.argmin(xp.abs(rho - radii[None, :]), axis=1)  # (B,)
        return u * radii[k][:, None]


class EightGaussians(Dataset):
    """Eight Gaussians (std ``std``) centred on a circle of radius 2; label = component.
    ``project`` maps to the nearest centre (the 0-dimensional "manifold" the mixture blurs)."""

    name = "8gaussians"
    has_projection = True
    shape = (2,)
    num_classes = 8

    def __init__(self, std=0.1):
        self.std = check_real(std, "std", 0.0, _MAX_SCALE)

    def centres(self, xp):
        a = 2 * math.pi * xp.arange(8) / 8
        return 2.0 * xp.stack([xp.cos(a), xp.sin(a)], axis=1)  # (8, 2)

    def _sample(self, n, rng):
        xp = backend.get_xp()
        y = rng.integers(0, 8, size=n)
        return self.centres(xp)[y] + self.std * rng.standard_normal((n, 2)), y.astype("int64")

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        c = self.centres(xp).astype(x.dtype)
        d2 = xp.sum((x[:, None, :] - c[None]) ** 2, axis=2)  # (B, 8)
        return c[xp.argmin(d2, axis=1)]


class Checkerboard(Dataset):
    """Uniform on the 8 'black' unit cells of a 4x4 board on [-2, 2]^2 (floor(x) + floor(y) even).
    Projection: clamp onto each black cell, keep the nearest (exact)."""

    name = "checkerboard"
    has_projection = True
    shape = (2,)

    def _cells(self, xp):
        ij = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
        return xp.asarray(ij, dtype="float64")  # (8, 2) lower-left corners

    def _sample(self, n, rng):
        xp = backend.get_xp()
        cells = self._cells(xp)
        k = rng.integers(0, cells.shape[0], size=n)
        return cells[k] + rng.random((n, 2)), None

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        lo = self._cells(xp).astype(x.dtype)  # (8, 2)
        p = xp.clip(x[:, None, :], lo[None], lo[None] + 1.0)  # (B, 8, 2) nearest point of each cell
        k = xp.argmin(xp.sum((p - x[:, None, :]) ** 2, axis=2), axis=1)  # (B,)
        return p[xp.arange(x.shape[0]), k]


# ---------------------------------------------------------------------------------- 3-D
class Sphere(Dataset):
    """Uniform on the sphere of radius ``radius`` in R^dim. Exact projection x r / |x|."""

    name = "sphere"
    has_projection = True

    def __init__(self, dim=3, radius=1.5):
        self.shape = (check_positive_int(dim, "dim", minimum=2),)
        self.radius = check_real(radius, "radius", 0.0, _MAX_SCALE, low_open=True)

    def _sample(self, n, rng):
        g = rng.standard_normal((n, self.shape[0]))
        xp = backend.get_xp(g)
        return self.radius * g / xp.linalg.norm(g, axis=1, keepdims=True), None

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        rho = xp.linalg.norm(x, axis=1, keepdims=True)
        e0 = xp.zeros(self.shape, dtype=x.dtype)
        e0[0] = 1.0  # the centre is equidistant from the whole sphere: pick e_0
        return self.radius * xp.where(rho > 0, x / xp.where(rho > 0, rho, 1.0), e0)


class Torus(Dataset):
    """Torus in R^3 (major radius R, tube radius r), angles (u, v) drawn uniformly (not
    area-uniform: the inner side is denser). Exact projection: nearest point of the core
    circle, then onto the tube around it."""

    name = "torus"
    has_projection = True
    shape = (3,)

    def __init__(self, R=1.5, r=0.5):
        R = check_real(R, "R", 0.0, _MAX_SCALE, low_open=True)
        r = check_real(r, "r", 0.0, _MAX_SCALE, low_open=True)
        if not r < R:
            raise ValueError(f"need 0 < r < R; got R={R}, r={r}")
        self.R, self.r = R, r

    def _sample(self, n, rng):
        xp = backend.get_xp()
        u, v = 2 * math.pi * rng.random(n), 2 * math.pi * rng.random(n)
        rho = self.R + self.r * xp.cos(v)
        return xp.stack([rho * xp.cos(u), rho * xp.sin(u), self.r * xp.sin(v)], axis=1), None

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        rho = xp.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
        ex = xp.where(rho > 0, x[:, 0] / xp.where(rho > 0, rho, 1.0), 1.0)
        ey = xp.where(rho > 0, x[:, 1] / xp.where(rho > 0, rho, 1.0), 0.0)
        core = xp.stack([self.R * ex, self.R * ey, xp.zeros_like(ex)], axis=1)  # (B, 3)
        d = x - core
        nd = xp.linalg.norm(d, axis=1, keepdims=True)
        outward = xp.stack([ex, ey, xp.zeros_like(ex)], axis=1)  # on the core circle: any tube point
        return core + self.r * xp.where(nd > 0, d / xp.where(nd > 0, nd, 1.0), outward)


class SwissRoll3D(Dataset):
    """Swiss-roll sheet in R^3: (c1(t), h, c2(t)) with c the 2-D swiss roll and h in [-1, 1]
    (the curved surface in the figure of the "Unit 10 – Diffusion Models" lecture notes). Projection: the sheet is a product
    curve x interval, so project (x, z) onto the curve and clamp y (exact up to the curve
    search)."""

    name = "swiss_roll_3d"
    has_projection = True
    shape = (3,)

    def __init__(self, noise=0.0):
        self.curve = SwissRoll()
        self.noise = check_real(noise, "noise", 0.0, _MAX_SCALE)

    def _sample(self, n, rng):
        xp = backend.get_xp()
        xz = self.curve.sample(n, rng)
        h = 2.0 * rng.random(n) - 1.0
        x = xp.stack([xz[:, 0], h, xz[:, 1]], axis=1)
        if self.noise > 0:
            x += self.noise * rng.standard_normal((n, 3))
        return x, None

    def project(self, x):
        x = self._check_x(x)
        xp = backend.get_xp(x)
        pxz = self.curve.project(xp.ascontiguousarray(x[:, [0, 2]]))
        return xp.stack([pxz[:, 0], xp.clip(x[:, 1], -1.0, 1.0), pxz[:, 1]], axis=1).astype(x.dtype)


class EmbeddedManifold(Dataset):
    """A low-dimensional data set embedded in R^ambient_dim by a random rotation:
    x = [x_base, 0, ..., 0] Q with Q orthogonal (QR of a Gaussian matrix drawn from ``seed``
    on the host). Projection: rotate back, project the first coordinates onto the base
    manifold, zero the rest, rotate forward (exact when the base projection is)."""

    name = "embedded"

    def __init__(self, base="spiral", ambient_dim=16, seed=0, **base_kw):
        self.base = get_dataset(base, **base_kw) if isinstance(base, str) else base
        if not isinstance(self.base, Dataset):
            raise TypeError(f"base must be a data set name or a Dataset; got {type(base).__name__}")
        seed = check_positive_int(seed, "seed", minimum=0, maximum=2**32 - 1)
        if len(self.base.shape) != 1:
            raise ValueError("base must be a point-set data set (shape (d,))")
        D = check_positive_int(ambient_dim, "ambient_dim", minimum=self.base.dim)
        self.shape = (D,)
        self.num_classes = self.base.num_classes
        self.has_projection = self.base.has_projection
        q, r = numpy.linalg.qr(numpy.random.default_rng(seed).standard_normal((D, D)))
        self._Q = q * numpy.sign(numpy.diag(r))  # (D, D) orthogonal, host copy

    def Q(self, xp):
        return xp.asarray(self._Q)

    def _sample(self, n, rng):
        xp = backend.get_xp()
        xb, y = self.base._sample(n, rng)
        d = self.base.dim
        return xb @ self.Q(xp)[:d], y  # (n, d) @ (d, D) -> (n, D)

    def project(self, x):
        x = self._check_x(x)
        if not self.has_projection:
            return self.base.project(x)  # raises NotImplementedError
        xp = backend.get_xp(x)
        Q = self.Q(xp).astype(x.dtype)
        d = self.base.dim
        z = x @ Q[:d].T  # (B, D) @ (D, d) -> (B, d)
        return self.base.project(xp.ascontiguousarray(z)) @ Q[:d]  # (B, d) @ (d, D) -> (B, D)


# ---------------------------------------------------------------------------------- glyphs
_GLYPH_RES = 64  # base renders are 64x64 (host), resampled to the target size
_STROKES = (0.0, 1.5, 3.0)  # extra stroke width (points at 72 dpi on a 64 px canvas)
_GLYPH_CACHE: dict = {}  # size -> (10 * len(_STROKES), 64, 64) float64 in [0, 1]; one per process


def _glyph_canvas(res):
    """A res x res pixel Agg canvas (host) whose data coordinates run 0..res on both axes, without
    decorations: ``(canvas, ax)``. Draw black patches on ``ax``, then read them with :func:`_ink`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1), dpi=res)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, res)
    ax.set_ylim(0, res)
    ax.axis("off")
    return canvas, ax


def _ink(canvas):
    """Render ``canvas`` and return its ink (res, res) in [0, 1]: 1 where black, 0 on the white ground."""
    canvas.draw()
    return 1.0 - numpy.asarray(canvas.buffer_rgba())[:, :, 0] / 255.0


def _render_glyphs(size):
    """Render digits 0-9 with matplotlib's bundled DejaVu Sans (no download), at each stroke
    width, on a 64x64 Agg canvas; blur for the target size (anti-aliasing); cache per size."""
    if size in _GLYPH_CACHE:
        return _GLYPH_CACHE[size]
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D
    from scipy.ndimage import gaussian_filter

    res = _GLYPH_RES
    out = numpy.zeros((10 * len(_STROKES), res, res))
    prop = FontProperties(family="DejaVu Sans")
    for dgt in range(10):
        path = TextPath((0, 0), str(dgt), size=1.0, prop=prop)
        (x0, y0), (x1, y1) = path.get_extents().get_points()
        s = 0.62 * res / max(x1 - x0, y1 - y0)  # the digit's box fills ~62% of the frame (MNIST-like)
        tr = Affine2D().translate(-(x0 + x1) / 2, -(y0 + y1) / 2).scale(s).translate(res / 2, res / 2)
        for k, lw in enumerate(_STROKES):
            canvas, ax = _glyph_canvas(res)
            ax.add_patch(PathPatch(tr.transform_path(path), facecolor="k", edgecolor="k", lw=lw))
            out[dgt * len(_STROKES) + k] = _ink(canvas)
    out = gaussian_filter(out, sigma=(0, 0.45 * res / size, 0.45 * res / size))
    _GLYPH_CACHE[size] = out
    return out


class GlyphDigits(Dataset):
    """Labelled digit glyphs (n, 1, size, size) in [-1, 1] (background -1, ink +1), labels 0..9.

    Each sample: a base render (digit, stroke width) under a random affine jitter —
    rotation U(-max_rotation, max_rotation) degrees, scale U(1 - max_scale, 1 + max_scale),
    shift U(-max_shift, max_shift) of the frame — resampled bilinearly from the cached
    64x64 renders (host NumPy, vectorised over the batch). No closed-form projection.
    """

    has_projection = False
    num_classes = 10

    def __init__(self, size=16, max_rotation=12.0, max_scale=0.12, max_shift=0.08):
        if isinstance(size, bool) or size not in (16, 28):
            raise ValueError(f"size must be 16 or 28; got {size!r}")
        self.size = int(size)
        self.name = f"glyphs{size}"
        self.shape = (1, size, size)
        self.max_rotation = check_real(max_rotation, "max_rotation", 0.0, 180.0)  # degrees
        self.max_scale = check_real(max_scale, "max_scale", 0.0, 0.9)  # relative: the glyph keeps its size's sign
        self.max_shift = check_real(max_shift, "max_shift", 0.0, 1.0)  # fraction of the image

    def _sample(self, n, rng):
        base = _render_glyphs(self.size)  # host cache
        # the random draws come from the injected generator (maybe CuPy): copy them to the host
        y = backend.to_numpy(rng.integers(0, 10, size=n))
        stroke = backend.to_numpy(rng.integers(0, len(_STROKES), size=n))
        u = backend.to_numpy(rng.random((n, 4)))
        img = _affine_jitter(base, y * len(_STROKES) + stroke, u, self.size, self.max_rotation, self.max_scale,
                             self.max_shift)  # (n, S, S) in [0, 1]
        x = (2.0 * img - 1.0)[:, None]  # (n, S, S) -> (n, 1, S, S)
        return backend.asarray(x), backend.asarray(y.astype(numpy.int64))  # explicit host -> default copy

    @staticmethod
    def _bilinear(base, which, sx, sy):
        """Bilinear sample base[which] at (sy, sx) (n, S, S); outside the canvas is background 0."""
        res = base.shape[1]
        x0, y0 = numpy.floor(sx).astype(int), numpy.floor(sy).astype(int)
        fx, fy = sx - x0, sy - y0
        out = numpy.zeros(sx.shape)
        idx = which[:, None, None]
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                xi, yi = x0 + dx, y0 + dy
                ok = (xi >= 0) & (xi < res) & (yi >= 0) & (yi < res)  # check indices before indexing
                v = base[idx, numpy.clip(yi, 0, res - 1), numpy.clip(xi, 0, res - 1)]
                out += numpy.where(ok, v, 0.0) * wy * wx
        return numpy.clip(out, 0.0, 1.0)


def _affine_jitter(base, which, u, size, max_rotation, max_scale, max_shift):
    """Resample ``base[which]`` (host renders (K, 64, 64)) to (n, size, size) under a random affine map
    drawn from the uniforms ``u`` (n, 4): rotation U(-max_rotation, max_rotation) degrees, scale
    U(1 - max_scale, 1 + max_scale), shift U(-max_shift, max_shift) of the frame; bilinear, host NumPy."""
    ang = numpy.deg2rad(max_rotation * (2 * u[:, 0] - 1))
    scale = 1.0 + max_scale * (2 * u[:, 1] - 1)
    shift = max_shift * (2 * u[:, 2:4] - 1) * _GLYPH_RES  # (n, 2) in base pixels
    S, res = size, _GLYPH_RES
    g = (numpy.arange(S) + 0.5) * res / S - res / 2  # output pixel centres in base coordinates
    gy, gx = numpy.meshgrid(g, g, indexing="ij")  # (S, S)
    # inverse map: source = R(-ang) (out - shift) / scale + centre
    ox = gx[None] - shift[:, 0, None, None]
    oy = gy[None] - shift[:, 1, None, None]
    c, s = numpy.cos(ang)[:, None, None], numpy.sin(ang)[:, None, None]
    sx = (c * ox + s * oy) / scale[:, None, None] + res / 2 - 0.5
    sy = (-s * ox + c * oy) / scale[:, None, None] + res / 2 - 0.5
    return GlyphDigits._bilinear(base, which, sx, sy)


# ---------------------------------------------------------------------------------- registry
DATASETS = {
    "spiral": Spiral,
    "swiss_roll": SwissRoll,
    "moons": TwoMoons,
    "circle": lambda **kw: Circles(radii=(1.5,), **kw),
    "circles": Circles,
    "8gaussians": EightGaussians,
    "checkerboard": Checkerboard,
    "spiral_arms": SpiralArms,
    "swiss_roll_3d": SwissRoll3D,
    "torus": Torus,
    "sphere": Sphere,
    "embedded_spiral": lambda **kw: EmbeddedManifold("spiral", **kw),
    "glyphs16": lambda **kw: GlyphDigits(size=16, **kw),
    "glyphs28": lambda **kw: GlyphDigits(size=28, **kw),
    "captioned_glyphs": lambda **kw: _captioned_glyphs(**kw),
}


def _captioned_glyphs(**kw):
    from .captioned import CaptionedGlyphs  # its own module (it imports this one)

    return CaptionedGlyphs(**kw)


def list_datasets():
    """Sorted names accepted by :func:`get_dataset`."""
    return sorted(DATASETS)


def get_dataset(name, **kw):
    """Instantiate a registered data set by name (keyword arguments go to its constructor)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {list_datasets()}; got {type(name).__name__}")
    if name not in DATASETS:
        raise ValueError(f"unknown data set name {name!r}; known: {', '.join(list_datasets())}")
    return DATASETS[name](**kw)
