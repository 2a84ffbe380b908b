"""Statistical shape model of vertex-corresponded surfaces (PCA), whitened codes, slerp.

The cortex method generates new cortical surfaces from a point-distribution model: every subject's
surfaces (``lh_pial``, ``lh_white``, ``rh_pial``, ``rh_white``, ...) have the same vertices in
correspondence (registration to a common sphere, resampling) and share their faces, so a subject is
one vector and shape variation is linear algebra on those vectors.

Notation (the legend for this module):
  n          subjects; each a dict name -> Surface, the same names, vertex counts and faces for all
  x          (D,) a subject's vertices concatenated over ``names`` (in that order), D = 3 * sum N_s
  mu         (D,) the mean shape;  X = [x_i - mu]_i  (n, D) the centred data
  X = U S V^T        thin SVD; the principal directions u_k are the rows of ``components`` (K, D)
  lambda_k = s_k^2 / (n - 1)   the variance along u_k (``variances``)
  z_k = <x - mu, u_k> / sqrt(lambda_k)     whitened code (``encode``): training codes have unit
                                           sample variance along every kept component
  x(z) = mu + sum_k sqrt(lambda_k) z_k u_k  (``decode``)

New shapes: ``sample`` draws z ~ N(0, temperature^2 I_K); ``slerp`` interpolates two codes. Why
slerp and not a straight line: in whitened coordinates the code of a random subject lies near the
sphere |z| = sqrt(K) (a chi distribution with K degrees of freedom concentrates there). The linear
midpoint (z0 + z1) / 2 of two independent codes has covariance I / 2: its norm is ~sqrt(K / 2) and
its decoded shapes have half the per-vertex variance of the training set, i.e. they regress towards
the mean shape (smoother, less individual folding). Slerp moves on (or, for unequal norms, between)
the spheres and keeps the variance.

Pose: ``fit_shape_model(..., alignment="rigid")`` removes a rigid transform per subject first
(generalised Procrustes: all surfaces of a subject move together; rotation + translation, no scale,
because brain size is a shape feature the generator should keep). The default is ``"none"``:
surfaces corresponded by registration to a template are already in a common space. A rigidly aligned
model also aligns what it encodes to its mean, so ``decode(encode(x))`` reproduces x up to pose.

Storage: ``save`` writes one safetensors file (arrays; the faces per surface) whose header carries the
JSON metadata (names, vertex counts, n_subjects, alignment, total variance, package version),
written atomically (temporary file + rename). Arrays are float64: a 4-surface 150k-vertex model of
K components takes K * 14 MB.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from brainsynth.errors import InputError
from brainsynth.io import Surface, atomic_path

Alignment = Literal["none", "rigid"]
_FORMAT = "brainsynth.shape_model"
_FORMAT_VERSION = 1


# -- spherical interpolation ----------------------------------------------------------------------
def slerp(z0: np.ndarray, z1: np.ndarray, phi: float | np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation between codes ``z0`` and ``z1`` (..., K) at ``phi`` (0 gives z0,
    1 gives z1; scalar or an array broadcasting against the batch shape ``...``).

    Definition used here: the *direction* moves along the great circle from z0/|z0| to z1/|z1| at
    constant angular speed (angle phi * Omega from z0, Omega the angle between the codes) and the
    *norm* moves linearly from |z0| to |z1|. When |z0| = |z1| this is exactly Shoemake's slerp,
    ``(sin((1 - phi) Omega) z0 + sin(phi Omega) z1) / sin(Omega)``, and the norm stays |z0| for every
    phi; for unequal norms it stays between them (Shoemake's formula would not: its norm is not
    monotone and its angle not linear in phi).

    Degenerate cases: nearly parallel codes (sin Omega < eps) interpolate the directions linearly
    (the great circle is then indistinguishable from the chord); nearly opposite codes, where the
    great circle is not unique, turn through a fixed direction perpendicular to z0; a zero code
    (no direction) falls back to linear interpolation ``(1 - phi) z0 + phi z1``.
    Returns shape ``broadcast(phi, ...) + (K,)``.
    """
    z0 = np.asarray(z0, dtype=np.float64)
    z1 = np.asarray(z1, dtype=np.float64)
    ph = np.asarray(phi, dtype=np.float64)[..., None]
    r0 = np.linalg.norm(z0, axis=-1, keepdims=True)
    r1 = np.linalg.norm(z1, axis=-1, keepdims=True)
    tiny = 1e-300
    u0, u1 = z0 / np.maximum(r0, tiny), z1 / np.maximum(r1, tiny)
    cos = np.clip(np.sum(u0 * u1, axis=-1, keepdims=True), -1.0, 1.0)
    omega = np.arccos(cos)
    sin = np.sin(omega)
    regular = sin >= eps
    safe_sin = np.where(regular, sin, 1.0)
    great = (np.sin((1 - ph) * omega) * u0 + np.sin(ph * omega) * u1) / safe_sin
    chord = (1 - ph) * u0 + ph * u1
    chord = chord / np.maximum(np.linalg.norm(chord, axis=-1, keepdims=True), tiny)
    # opposite codes: any great circle through u0 and -u0 will do; take the one through the
    # coordinate axis least aligned with u0 (deterministic)
    axis = np.zeros(np.broadcast_shapes(u0.shape, u1.shape))
    np.put_along_axis(axis, np.argmin(np.abs(u0 + 0 * u1), axis=-1)[..., None], 1.0, axis=-1)
    perp = axis - np.sum(axis * u0, axis=-1, keepdims=True) * u0
    perp = perp / np.maximum(np.linalg.norm(perp, axis=-1, keepdims=True), tiny)
    half_turn = np.cos(np.pi * ph) * u0 + np.sin(np.pi * ph) * perp
    direction = np.where(regular, great, np.where(cos > 0, chord, half_turn))
    out = ((1 - ph) * r0 + ph * r1) * direction
    no_direction = (r0 <= tiny) | (r1 <= tiny)
    return np.where(no_direction, (1 - ph) * z0 + ph * z1, out)


# -- rigid alignment ------------------------------------------------------------------------------
def _rigid_align(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``points`` (N, 3) moved by the rotation + translation that best fits ``target`` (N, 3) in
    least squares (Kabsch: SVD of the cross-covariance, reflection excluded)."""
    pc, tc = points.mean(axis=0), target.mean(axis=0)
    h = (points - pc).T @ (target - tc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return (points - pc) @ rot.T + tc


def _procrustes(data: np.ndarray, iterations: int = 20, tol: float = 1e-10) -> np.ndarray:
    """Generalised Procrustes of the rows of ``data`` (n, D): each subject's D/3 points aligned
    rigidly to the running mean until the mean stops moving (the first subject fixes the frame)."""
    pts = data.reshape(len(data), -1, 3).copy()
    mean = pts[0].copy()
    for _ in range(iterations):
        pts = np.stack([_rigid_align(p, mean) for p in pts])
        new = pts.mean(axis=0)
        moved = float(np.sqrt(np.mean((new - mean) ** 2)))
        mean = new
        if moved < tol * max(1.0, float(np.sqrt(np.mean(mean**2)))):
            break
    return pts.reshape(len(data), -1)


# -- the model ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ShapeModel:
    """PCA shape model (module docstring for the notation).

    ``mean`` (D,), ``components`` (K, D) orthonormal rows, ``variances`` (K,) lambda_k in mm^2,
    descending; ``names`` the surfaces in concatenation order, ``faces[name]`` (M_s, 3) shared by all
    subjects, ``n_vertices`` their vertex counts; ``n_subjects`` fitted on; ``total_variance`` the
    sum of all n - 1 variances (kept or not) so explained ratios stay true after truncation.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    names: tuple[str, ...]
    faces: Mapping[str, np.ndarray]
    n_vertices: tuple[int, ...]
    n_subjects: int
    total_variance: float
    alignment: Alignment = "none"

    def __post_init__(self) -> None:
        d = 3 * sum(self.n_vertices)
        if self.mean.shape != (d,):
            raise ValueError(f"mean must be ({d},) for vertex counts {self.n_vertices}")
        if self.components.ndim != 2 or self.components.shape[1] != d:
            raise ValueError(f"components must be (K, {d}), got {self.components.shape}")
        if self.variances.shape != (self.components.shape[0],):
            raise ValueError("one variance per component")
        if np.any(self.variances <= 0):
            raise ValueError("variances must be positive (drop null components)")
        if len(self.names) != len(self.n_vertices) or set(self.names) != set(self.faces):
            raise ValueError("names, n_vertices and faces must describe the same surfaces")

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def singular_values(self) -> np.ndarray:
        """s_k of the centred data matrix: lambda_k = s_k^2 / (n - 1)."""
        return np.sqrt(self.variances * (self.n_subjects - 1))

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """lambda_k / (sum of all variances of the training data), per kept component."""
        return self.variances / self.total_variance

    # -- vectors <-> surfaces ---------------------------------------------------------------------
    def flatten(self, surfaces: Mapping[str, Surface]) -> np.ndarray:
        """(D,) vertices of ``surfaces`` in the model's order; checks names, counts and faces."""
        return _flatten(surfaces, self.names, self.n_vertices, self.faces)

    def unflatten(self, x: np.ndarray) -> dict[str, Surface]:
        """Surfaces (name -> Surface with the model's faces) from a (D,) vector."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a ({self.dim},) vector, got {x.shape}")
        out, start = {}, 0
        for name, n in zip(self.names, self.n_vertices):
            out[name] = Surface(x[start : start + 3 * n].reshape(n, 3), self.faces[name])
            start += 3 * n
        return out

    def mean_surfaces(self) -> dict[str, Surface]:
        return self.unflatten(self.mean)

    # -- codes ------------------------------------------------------------------------------------
    def encode(self, surfaces: Mapping[str, Surface] | np.ndarray) -> np.ndarray:
        """Whitened code z (K,) of a subject's surfaces, or codes (B, K) of vectors (B, D).

        ``z_k = <x - mu, u_k> / sqrt(lambda_k)``; a rigidly aligned model first aligns x to mu.
        """
        x = self.flatten(surfaces) if isinstance(surfaces, Mapping) else np.asarray(surfaces)
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim or x.ndim not in (1, 2):
            raise ValueError(f"expected vectors (..., {self.dim}), got {x.shape}")
        if self.alignment == "rigid":
            m = self.mean.reshape(-1, 3)
            rows = np.atleast_2d(x)
            aligned = np.stack([_rigid_align(r.reshape(-1, 3), m).ravel() for r in rows])
            x = aligned.reshape(x.shape)
        return ((x - self.mean) @ self.components.T) / np.sqrt(self.variances)

    def decode_vertices(self, z: np.ndarray) -> np.ndarray:
        """Shape vectors (..., D) of codes (..., K): ``mu + (z * sqrt(lambda)) @ U``."""
        z = np.asarray(z, dtype=np.float64)
        if z.shape[-1] != self.n_components:
            raise ValueError(f"expected codes (..., {self.n_components}), got {z.shape}")
        return self.mean + (z * np.sqrt(self.variances)) @ self.components

    def decode(self, z: np.ndarray) -> dict[str, Surface]:
        """Surfaces of one code z (K,)."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 1:
            raise ValueError(f"decode takes one code (K,), got {z.shape}; use decode_vertices")
        return self.unflatten(self.decode_vertices(z))

    def reconstruct(self, surfaces: Mapping[str, Surface]) -> dict[str, Surface]:
        """``decode(encode(surfaces))``: the projection onto the model's span."""
        return self.decode(self.encode(surfaces))

    def sample_codes(
        self,
        n: int,
        generator: np.random.Generator | int | None = None,
        temperature: float = 1.0,
    ) -> np.ndarray:
        """(n, K) codes z ~ N(0, temperature^2 I)."""
        rng = (
            generator
            if isinstance(generator, np.random.Generator)
            else np.random.default_rng(generator)
        )
        return temperature * rng.standard_normal((n, self.n_components))

    def sample(
        self,
        n: int,
        generator: np.random.Generator | int | None = None,
        temperature: float = 1.0,
    ) -> list[dict[str, Surface]]:
        """``n`` new subjects decoded from ``sample_codes`` (temperature < 1 stays nearer the mean)."""
        return [self.decode(z) for z in self.sample_codes(n, generator, temperature)]

    def truncate(self, k: int) -> ShapeModel:
        """The model with its first ``k`` components."""
        if not 1 <= k <= self.n_components:
            raise ValueError(f"k must be in [1, {self.n_components}], got {k}")
        return ShapeModel(
            self.mean,
            self.components[:k],
            self.variances[:k],
            self.names,
            self.faces,
            self.n_vertices,
            self.n_subjects,
            self.total_variance,
            self.alignment,
        )

    # -- storage ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """One safetensors file (arrays + JSON metadata in its header), written atomically."""
        from safetensors.numpy import save_file

        from brainsynth import __version__

        path = Path(path)
        tensors = {
            "mean": np.ascontiguousarray(self.mean, dtype=np.float64),
            "components": np.ascontiguousarray(self.components, dtype=np.float64),
            "variances": np.ascontiguousarray(self.variances, dtype=np.float64),
        }
        for i, name in enumerate(self.names):
            tensors[f"faces.{i}"] = np.ascontiguousarray(self.faces[name], dtype=np.int64)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "package_version": __version__,
            "names": list(self.names),
            "n_vertices": list(self.n_vertices),
            "n_subjects": self.n_subjects,
            "total_variance": self.total_variance,
            "alignment": self.alignment,
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"brainsynth": json.dumps(meta)})
        return path


def load_shape_model(path: str | Path) -> ShapeModel:
    """Read a model written by ``ShapeModel.save``; an InputError names the file and the problem."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise InputError(path, f"cannot read shape model ({type(e).__name__}: {e})") from e
    try:
        meta = json.loads(header["brainsynth"])
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        if int(meta["format_version"]) > _FORMAT_VERSION:
            raise ValueError(f"format version {meta['format_version']} is newer than this code")
        names = tuple(str(s) for s in meta["names"])
        return ShapeModel(
            mean=arrays["mean"],
            components=arrays["components"],
            variances=arrays["variances"],
            names=names,
            faces={name: arrays[f"faces.{i}"] for i, name in enumerate(names)},
            n_vertices=tuple(int(n) for n in meta["n_vertices"]),
            n_subjects=int(meta["n_subjects"]),
            total_variance=float(meta["total_variance"]),
            alignment=meta["alignment"],
        )
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a brainsynth shape model ({type(e).__name__}: {e})") from e


# -- fitting --------------------------------------------------------------------------------------
def _flatten(
    surfaces: Mapping[str, Surface],
    names: Sequence[str],
    n_vertices: Sequence[int],
    faces: Mapping[str, np.ndarray],
) -> np.ndarray:
    if set(surfaces) != set(names):
        raise ValueError(f"expected surfaces {sorted(names)}, got {sorted(surfaces)}")
    parts = []
    for name, n in zip(names, n_vertices):
        s = surfaces[name]
        if s.n_vertices != n:
            raise ValueError(f"{name}: {s.n_vertices} vertices, the model has {n}")
        if not np.array_equal(s.faces, faces[name]):
            raise ValueError(f"{name}: faces differ from the model's (not vertex-corresponded)")
        parts.append(s.vertices.ravel())
    return np.concatenate(parts)


def _choose_k(variances: np.ndarray, total: float, n_components: int | float | None) -> int:
    rank = len(variances)
    if n_components is None:
        return rank
    if isinstance(n_components, bool):
        raise TypeError("n_components must be None, an int or a float in (0, 1]")
    if isinstance(n_components, (int, np.integer)):
        if not 1 <= n_components <= rank:
            raise ValueError(f"n_components={n_components}: the data have rank {rank}")
        return int(n_components)
    frac = float(n_components)
    if not 0 < frac <= 1:
        raise ValueError(f"a variance fraction must be in (0, 1], got {frac}")
    cum = np.cumsum(variances) / total
    return int(min(rank, np.searchsorted(cum, frac - 1e-12) + 1))


def fit_shape_model(
    subjects: Sequence[Mapping[str, Surface]],
    n_components: int | float | None = None,
    alignment: Alignment = "none",
) -> ShapeModel:
    """PCA of vertex-corresponded subjects (each a dict name -> Surface with the same names, vertex
    counts and faces). ``n_components``: None keeps every component of non-zero variance (at most
    n - 1), an int that many, a float in (0, 1] the fewest whose variances explain that fraction.
    ``alignment="rigid"`` removes each subject's pose first (module docstring).

    Thin SVD of the centred (n, D) float64 matrix: memory ~ 3 n D * 8 bytes.
    """
    if len(subjects) < 2:
        raise ValueError("a shape model needs at least two subjects")
    if alignment not in ("none", "rigid"):
        raise ValueError(f"alignment must be 'none' or 'rigid', got {alignment!r}")
    first = subjects[0]
    names = tuple(first)
    counts = tuple(first[name].n_vertices for name in names)
    faces = {name: first[name].faces.copy() for name in names}
    rows = []
    for i, subject in enumerate(subjects):
        try:
            rows.append(_flatten(subject, names, counts, faces))
        except ValueError as e:
            raise ValueError(f"subject {i}: {e}") from e
    data = np.stack(rows)
    if alignment == "rigid":
        data = _procrustes(data)
    mean = data.mean(axis=0)
    centred = data - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    n = len(data)
    variances = s**2 / (n - 1)
    total = float(variances.sum())
    # numerical rank (numpy's matrix_rank rule): the centred data have rank <= n - 1
    keep = s > s.max(initial=0.0) * max(centred.shape) * np.finfo(np.float64).eps
    if not keep.any():
        raise ValueError("all subjects are identical: no shape variation to model")
    variances, vt = variances[keep], vt[keep]
    # deterministic signs: the largest-magnitude entry of each direction is positive
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    vt = vt * signs[:, None]
    k = _choose_k(variances, total, n_components)
    return ShapeModel(
        mean=mean,
        components=np.ascontiguousarray(vt[:k]),
        variances=variances[:k],
        names=names,
        faces=faces,
        n_vertices=counts,
        n_subjects=n,
        total_variance=total,
        alignment=alignment,
    )
