"""2D deformation fields on feature maps: warp, compose, invert, conjugate (NeRFFaceShop §III-B).

Conventions (every function here follows them):

* A *displacement field* ``d`` is a tensor (B, 2, H, W) in normalised
  coordinates: the image spans [-1, 1] along each axis, pixel centres sit at
  ``-1 + (2 i + 1) / size`` (``grid_sample`` with ``align_corners=False``),
  channel 0 is the x (width, left -> right) component and channel 1 the y
  (height, top -> bottom) component. One pixel is ``2 / W`` along x and
  ``2 / H`` along y. Because the units are normalised, a field keeps its
  meaning at any resolution (``resize_displacement`` only resamples it).
* A field is a *backward* map: ``T_d(x) = x + d(x)`` says where each output
  pixel reads from, ``warp(f, d)(x) = f(T_d(x)) = f(x + d(x))`` (bilinear).
  Backward maps compose in reverse: warping by ``a`` and then by ``b`` gives
  ``f(T_a(T_b(x)))``, the field of ``T_a o T_b`` (see ``compose``).
* Outside the image, features follow ``padding_mode``; fields themselves are
  always sampled with border padding (constant extension), which adds no
  stretch and so keeps ``invert`` contractive.

NeRFFaceShop warps the 32x32 rolled-out convolutional features (three planes
side by side) and the skip images by the fused field
``conjugate(d_shape, d_exp)``; ``warp_planes`` / ``warp_rolled_out`` apply a
field per plane without letting samples leak across plane boundaries.
"""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "identity_grid",
    "warp",
    "warp_planes",
    "warp_rolled_out",
    "resize_displacement",
    "compose",
    "invert",
    "conjugate",
    "mask_displacement",
    "field_gradients",
    "lipschitz_bound",
    "limit_lipschitz",
    "smoothness_loss",
    "displacement_magnitude",
    "displacement_roughness",
    "minimal_deformation_loss",
]

PaddingMode = Literal["zeros", "border", "reflection"]


def _check_field(displacement: Tensor, name: str = "displacement") -> None:
    if displacement.ndim != 4 or displacement.shape[1] != 2:
        raise ValueError(f"{name} must have shape (B, 2, H, W), got {tuple(displacement.shape)}")


def identity_grid(
    height: int, width: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Normalised pixel-centre coordinates, (1, H, W, 2) with ``[..., 0] = x``, ``[..., 1] = y``.

    ``grid_sample(f, identity_grid(H, W))`` returns ``f``: exactly when H and W
    are powers of two (every step of the coordinate arithmetic is then exact),
    up to float rounding otherwise.
    """
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)[None]


def warp(features: Tensor, displacement: Tensor, padding_mode: PaddingMode = "border") -> Tensor:
    """Backward-warp features: ``out(x) = features(x + displacement(x))``, bilinear.

    Args:
        features: (B, C, H, W); planes stacked along channels share the field.
        displacement: (B, 2, H, W) normalised units (module docstring); a batch
            of 1 on either argument broadcasts over the other.
        padding_mode: what ``features`` read outside the image ("border",
            "zeros", "reflection"; as ``grid_sample``).

    Returns:
        (B, C, H, W) in ``features``' dtype.
    """
    _check_field(displacement)
    if features.ndim != 4:
        raise ValueError(f"features must have shape (B, C, H, W), got {tuple(features.shape)}")
    if features.shape[-2:] != displacement.shape[-2:]:
        raise ValueError(
            f"field size {tuple(displacement.shape[-2:])} differs from feature size "
            f"{tuple(features.shape[-2:])}; resample it with resize_displacement first"
        )
    batch = max(features.shape[0], displacement.shape[0])
    if {features.shape[0], displacement.shape[0]} - {1, batch}:
        raise ValueError(f"batch sizes {features.shape[0]} and {displacement.shape[0]} do not broadcast")
    height, width = features.shape[-2:]
    grid = identity_grid(height, width, features.device, features.dtype)
    grid = grid + displacement.to(features.dtype).permute(0, 2, 3, 1)
    return F.grid_sample(
        features.expand(batch, -1, -1, -1),
        grid.expand(batch, -1, -1, -1),
        mode="bilinear",
        padding_mode=padding_mode,
        align_corners=False,
    )


def warp_planes(planes: Tensor, displacement: Tensor, padding_mode: PaddingMode = "border") -> Tensor:
    """Warp P planes stacked in a plane dimension, each on its own (samples never cross planes).

    Args:
        planes: (B, P, C, H, W), e.g. tri-plane features.
        displacement: (B, 2, H, W) shared by all planes, or (B, P, 2, H, W) one per plane.

    Returns:
        (B, P, C, H, W).
    """
    if planes.ndim != 5:
        raise ValueError(f"planes must have shape (B, P, C, H, W), got {tuple(planes.shape)}")
    batch, n_planes, channels, height, width = planes.shape
    if displacement.ndim == 4:
        displacement = displacement[:, None].expand(-1, n_planes, -1, -1, -1)
    if displacement.ndim != 5 or displacement.shape[1:3] != (n_planes, 2):
        raise ValueError(
            f"displacement must be (B, 2, H, W) or (B, {n_planes}, 2, H, W), got {tuple(displacement.shape)}"
        )
    flat_field = displacement.expand(batch, -1, -1, -1, -1).reshape(
        batch * n_planes, 2, *displacement.shape[-2:]
    )
    out = warp(planes.reshape(batch * n_planes, channels, height, width), flat_field, padding_mode)
    return out.reshape(batch, n_planes, channels, height, width)


def warp_rolled_out(
    features: Tensor, displacement: Tensor, n_planes: int = 3, padding_mode: PaddingMode = "border"
) -> Tensor:
    """Warp rolled-out features (planes side by side along the width), plane by plane.

    Args:
        features: (B, C, H, P * W), plane ``p`` in columns ``[p W, (p + 1) W)``.
        displacement: (B, 2, H, W) shared, or (B, P, 2, H, W) per plane; its
            normalised coordinates span one plane, not the whole strip.
        n_planes: P.

    Returns:
        (B, C, H, P * W).
    """
    if features.ndim != 4 or features.shape[-1] % n_planes:
        raise ValueError(f"features (B, C, H, P*W) with P={n_planes} expected, got {tuple(features.shape)}")
    planes = torch.stack(features.chunk(n_planes, dim=-1), dim=1)
    return torch.cat(warp_planes(planes, displacement, padding_mode).unbind(dim=1), dim=-1)


def resize_displacement(displacement: Tensor, height: int, width: int) -> Tensor:
    """Resample a field to another resolution (bilinear, pixel centres aligned).

    The values need no rescaling: normalised units mean the same thing at every
    resolution, which is how one 32x32 field can warp the 64..256 skip images.
    Returns (B, 2, height, width).
    """
    _check_field(displacement)
    if displacement.shape[-2:] == (height, width):
        return displacement
    return F.interpolate(displacement, size=(height, width), mode="bilinear", align_corners=False)


def compose(d_outer: Tensor, d_inner: Tensor) -> Tensor:
    """The field of ``T_outer o T_inner``: ``c(x) = d_inner(x) + d_outer(x + d_inner(x))``.

    Order: ``warp(warp(f, d_outer), d_inner) == warp(f, compose(d_outer, d_inner))``,
    i.e. the features are warped by ``d_outer`` *first*: ``warp(warp(f, a), b)(x)
    = warp(f, a)(x + b(x)) = f(x + b(x) + a(x + b(x)))``. The two sides differ
    only by interpolation error (``d_outer`` is sampled bilinearly, with border
    padding, at the displaced points).

    Args:
        d_outer, d_inner: (B, 2, H, W), same size; a batch of 1 broadcasts.

    Returns:
        (B, 2, H, W).
    """
    _check_field(d_outer, "d_outer")
    _check_field(d_inner, "d_inner")
    return d_inner + warp(d_outer, d_inner, padding_mode="border")


def _solve_preimage(
    displacement: Tensor,
    target: Tensor,
    start: Tensor,
    iterations: int,
    tolerance: float,
    backprop_steps: int | None = None,
) -> Tensor:
    """Field ``u`` with ``T_d(x + u(x)) = x + target(x)``, by ``u <- target - d(x + u)``.

    A contraction with factor Lip(d) (see ``invert``). The residual of ``u_k``,
    ``|u_k + d(x + u_k) - target|``, equals ``|u_{k+1} - u_k|``, so checking it
    costs no extra sampling; ``tolerance`` 0 never synchronises the device.
    ``backprop_steps`` k (None: all) lets gradients through the last k steps
    only, the earlier ones run without autograd (see ``conjugate``).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if backprop_steps is not None and backprop_steps < 1:
        raise ValueError(f"backprop_steps must be >= 1 or None, got {backprop_steps}")
    solution = start
    untracked = 0 if backprop_steps is None else max(0, iterations - backprop_steps)
    grad_enabled = torch.is_grad_enabled()
    for step in range(iterations):
        tracked = step >= untracked  # early stops only once gradients flow through the iterate
        with torch.set_grad_enabled(grad_enabled and tracked):
            updated = target - warp(displacement, solution, padding_mode="border")
        residual = torch.linalg.vector_norm(updated - solution, dim=1) if tracked and tolerance > 0 else None
        converged = residual is not None and residual.amax() < tolerance
        solution = updated
        if converged:
            break
    return solution


@overload
def invert(
    displacement: Tensor,
    iterations: int = ...,
    tolerance: float = ...,
    *,
    return_residual: Literal[False] = ...,
) -> Tensor: ...
@overload
def invert(
    displacement: Tensor, iterations: int = ..., tolerance: float = ..., *, return_residual: Literal[True]
) -> tuple[Tensor, Tensor]: ...
def invert(
    displacement: Tensor, iterations: int = 20, tolerance: float = 0.0, *, return_residual: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Field ``e`` of the inverse map: ``T_e = T_d^-1``, by fixed-point iteration.

    ``T_d(T_e(x)) = x`` reads ``e(x) = -d(x + e(x))``; starting from ``e_0 = -d``
    (the first-order guess) we iterate ``e_{k+1}(x) = -d(x + e_k(x))`` with
    bilinear, border-padded sampling of ``d``. The update is a contraction with
    factor L = Lipschitz constant of ``d`` (dimensionless in normalised units),
    so the error shrinks like ``L^k``: it converges when L < 1
    (``lipschitz_bound(d) < 1``, i.e. ``T_d`` is a diffeomorphism with no
    folds). The default 20 iterations reach ``0.5^20 ~ 1e-6`` of |d| at L = 0.5.

    ``e`` is exact for the bilinear field at the pixel centres: ``compose(d, e)``
    (``T_d o T_e - id``) is the residual; ``compose(e, d)`` (``T_e o T_d - id``)
    adds the interpolation error of ``e`` between pixel centres.

    The iterations are unrolled, so gradients reach ``displacement`` through
    every step (training needs them).

    Args:
        displacement: (B, 2, H, W) field ``d``.
        iterations: maximum number of fixed-point steps (>= 0).
        tolerance: stop once the largest per-pixel residual (normalised units)
            is below it; 0 runs all iterations without synchronising the
            device (the right choice inside a training step).
        return_residual: also return the per-sample maximum residual of the result.

    Returns:
        ``e`` (B, 2, H, W), and with ``return_residual`` a (B,) tensor
        ``max_x |e(x) + d(x + e(x))|`` (detached).
    """
    _check_field(displacement)
    zero = torch.zeros_like(displacement)
    inverse = _solve_preimage(displacement, zero, -displacement, iterations, tolerance)
    if not return_residual:
        return inverse
    with torch.no_grad():
        residual = torch.linalg.vector_norm(compose(displacement, inverse), dim=1).amax(dim=(1, 2))
    return inverse, residual


def conjugate(
    d_shape: Tensor, d_exp: Tensor, iterations: int = 20, backprop_steps: int | None = None
) -> Tensor:
    """Fused field for NeRFFaceShop's ``delta_shape o delta_exp o delta_shape^-1`` (§III-B).

    Semantics: ``d_shape`` is the feature warp from the shared template space
    to an identity's instance space, ``F_instance = warp(F_template, d_shape)``
    (so the template point ``u`` appears at ``T_shape^-1(u)`` in the instance);
    ``d_exp`` is the expression warp in template space. The paper applies, to
    instance features, ``delta_shape^-1`` (instance -> template), then
    ``delta_exp``, then ``delta_shape`` (template -> instance)::

        warp(warp(warp(F, invert(d_shape)), d_exp), d_shape)
            = F o T_shape^-1 o T_exp o T_shape            (backward maps compose in reverse)
            = warp(F, compose(compose(invert(d_shape), d_exp), d_shape))

    so the fused map is ``T(x) = T_shape^-1(T_exp(T_shape(x)))``. Rather than
    interpolating a precomputed inverse field, we solve ``T_shape(z) =
    T_exp(T_shape(x))`` for ``z`` at every pixel with ``invert``'s fixed-point
    iteration (same convergence condition, Lip(d_shape) < 1) started at
    ``z = x``: this is exact when ``d_exp = 0`` (``T = id``: no expression,
    no motion) and avoids one bilinear resampling. Other checks: ``d_shape =
    0`` gives ``d_exp``; a translation ``d_shape = t`` moves an expression
    bump at template point ``c`` to ``c - t`` in the instance; a scale
    ``T_shape(x) = s x`` gives ``b(s x - c) / s``.

    Args:
        d_shape: (B, 2, H, W) template -> instance field (identity-dependent).
        d_exp: (B, 2, H, W) template-space expression field (motion-dependent);
            a batch of 1 broadcasts on either.
        iterations: fixed-point steps (unrolled; gradients reach both fields).
        backprop_steps: None differentiates through every step (the exact
            gradient of the computed field). An integer k keeps autograd on the
            last k steps only, the earlier ones treat the iterate as a constant
            (the "Jacobian-free" gradient of fixed-point layers, Fung et al.
            2022): the unrolled gradient multiplies one Jacobian of ``d_shape``
            per step, so it grows like Lip(d_shape)^iterations once a field
            folds (Lip >= 1) and one such step can wreck a GAN run; the
            truncated one stays bounded, and at the fixed point it differs from
            the exact implicit gradient only by the factor (I + J)^-1 ~ I for
            gentle fields. Training uses 1 (``NeRFFaceShopConfig.warp_backprop_steps``).

    Returns:
        (B, 2, H, W) fused backward field ``T(x) - x`` to apply with ``warp``.
    """
    _check_field(d_shape, "d_shape")
    _check_field(d_exp, "d_exp")
    target = compose(d_exp, d_shape)  # T_exp(T_shape(x)) - x
    start = torch.zeros_like(target)
    return _solve_preimage(d_shape, target, start, iterations, tolerance=0.0, backprop_steps=backprop_steps)


def mask_displacement(displacement: Tensor, mask: Tensor) -> Tensor:
    """NeRFFaceShop's ``delta_exp (.) M`` (§III-C3): keep deformation only where the mask is 1.

    Args:
        displacement: (B, 2, H, W) template-space expression field.
        mask: (B or 1, 1, h, w) weights in [0, 1]; resampled bilinearly when
            (h, w) != (H, W), so one mask drawn at any resolution serves all.

    Returns:
        (B, 2, H, W) = displacement * mask (both components scaled alike).
    """
    _check_field(displacement)
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (B, 1, H, W), got {tuple(mask.shape)}")
    if mask.shape[-2:] != displacement.shape[-2:]:
        mask = F.interpolate(
            mask.to(displacement.dtype),
            size=displacement.shape[-2:],
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    return displacement * mask.to(displacement.dtype)


def field_gradients(displacement: Tensor) -> tuple[Tensor, Tensor]:
    """Forward-difference derivatives of a field per normalised unit (dimensionless).

    Returns:
        ``(d/dx, d/dy)``: (B, 2, H, W-1) and (B, 2, H-1, W), between
        neighbouring pixel centres (spacing 2/W and 2/H).
    """
    _check_field(displacement)
    height, width = displacement.shape[-2:]
    ddx = (displacement[..., :, 1:] - displacement[..., :, :-1]) * (width / 2)
    ddy = (displacement[..., 1:, :] - displacement[..., :-1, :]) * (height / 2)
    return ddx, ddy


def lipschitz_bound(displacement: Tensor) -> Tensor:
    """Upper bound of the Lipschitz constant of the bilinear field, (B,).

    Inside a bilinear cell the Jacobian's columns are convex combinations of
    the cell's edge differences, so ``|J|_2 <= |J|_F <= sqrt(max|d/dx|^2 +
    max|d/dy|^2)``; border padding adds nothing. ``invert`` converges when
    this is below 1.
    """
    ddx, ddy = field_gradients(displacement)
    max_x = torch.linalg.vector_norm(ddx, dim=1).flatten(1).amax(dim=1)
    max_y = torch.linalg.vector_norm(ddy, dim=1).flatten(1).amax(dim=1)
    return torch.sqrt(max_x**2 + max_y**2)


def limit_lipschitz(displacement: Tensor, limit: float) -> Tensor:
    """Scale each field down, where needed, so that ``lipschitz_bound <= limit``, (B, 2, H, W).

    A field whose bound is already below ``limit`` is returned unchanged;
    a steeper one is multiplied by ``limit / bound`` (its shape kept, its
    steepness capped). With ``limit < 1``, ``T_d(x) = x + d(x)`` is a
    diffeomorphism and ``invert`` / ``conjugate`` converge at rate ``limit``.
    Differentiable (the bound is a max: its gradient reaches the steepest cells).

    Args:
        displacement: (B, 2, H, W).
        limit: > 0, dimensionless (normalised units per normalised unit).
    """
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    bound = lipschitz_bound(displacement)
    scale = (limit / bound.clamp_min(torch.finfo(displacement.dtype).tiny)).clamp(max=1.0)
    return displacement * scale[:, None, None, None]


def smoothness_loss(displacement: Tensor) -> Tensor:
    """Mean squared first derivative of a field (a total-variation-like prior), scalar.

    Not part of NeRFFaceShop's losses (its minimal loss penalises magnitudes
    only); offered for ablations and other systems.
    """
    ddx, ddy = field_gradients(displacement)
    return ddx.square().mean() + ddy.square().mean()


def displacement_magnitude(displacement: Tensor) -> Tensor:
    """``||delta||_2`` of the minimal loss: mean over pixels and batch of ``|d(x)|``, scalar.

    The per-pixel Euclidean length averaged over the map, as the offset loss
    of Non-Rigid NeRF (the paper's [58]) averages ``|offset|`` over points;
    the paper does not spell out the reduction, and a mean (unlike a sum or a
    Frobenius norm of the whole map) keeps the weights resolution-independent.
    """
    _check_field(displacement)
    return torch.linalg.vector_norm(displacement, dim=1).mean()


def displacement_roughness(displacement: Tensor) -> Tensor:
    """Mean length of the field's forward differences along y plus along x, scalar.

    ``mean_x |d(x + e_y) - d(x)| + mean_x |d(x + e_x) - d(x)|``: zero for a
    constant field (a pure translation), and for a linear field ``d(x) = A x``
    the lengths of A's columns times the pixel spacing. The smoothness half of
    the deformation regulariser in NeRFFaceShop's released code.
    """
    _check_field(displacement)
    d_y = displacement[:, :, 1:, :] - displacement[:, :, :-1, :]
    d_x = displacement[:, :, :, 1:] - displacement[:, :, :, :-1]
    return torch.linalg.vector_norm(d_y, dim=1).mean() + torch.linalg.vector_norm(d_x, dim=1).mean()


def minimal_deformation_loss(
    d_shape: Tensor | None,
    d_exp: Tensor | None,
    alpha: float = 1.0,
    beta: float = 0.1,
    smoothness: float = 0.0,
) -> Tensor:
    """NeRFFaceShop's minimal constraint (§III-C1, unnumbered equation after "defined as").

    ``L_minimal = alpha ||delta_shape^32||_2 + beta ||delta_exp^32||_2`` with the
    paper's alpha = 1 and beta = 0.1; ``||.||_2`` is ``displacement_magnitude``.
    Both terms are magnitudes: alpha weights the shape field and beta the
    expression field. ``smoothness`` adds ``smoothness * displacement_roughness``
    to each field's term: the paper's equation has none (0), the released code
    regularises each field by magnitude plus roughness with equal weights (1).
    Either field may be None (its term is dropped), e.g. for the "w/o
    decomposition" ablation.

    Args:
        d_shape: (B, 2, 32, 32) shape field or None.
        d_exp: (B, 2, 32, 32) expression field or None.

    Returns:
        Scalar loss.
    """
    if d_shape is None and d_exp is None:
        raise ValueError("minimal_deformation_loss needs at least one field")

    def term(field: Tensor) -> Tensor:
        value = displacement_magnitude(field)
        return value + smoothness * displacement_roughness(field) if smoothness else value

    terms = []
    if d_shape is not None:
        terms.append(alpha * term(d_shape))
    if d_exp is not None:
        terms.append(beta * term(d_exp))
    return torch.stack(terms).sum()
