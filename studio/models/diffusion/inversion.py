"""Deterministic DDIM as an invertible map between the starting noise x_T and an image x_0.

DDIM with eta = 0 (Song et al. 2021) is a discretised ODE: in the coordinates
``y = x / sqrt(a)`` and ``s = sqrt((1 - a) / a)`` (a = alpha-bar at a timestep) one step is

    y_next = y + (s_next - s) * eps(x, t)

so running it forward (x_T -> x_0) samples, and running it backward (x_0 -> x_T) *inverts* an
image into the noise that samples it. Plain DDIM inversion evaluates eps at the point it
starts from instead of the point it arrives at; the error is small for many steps and grows for
few. ``refine`` fixed-point iterations per step solve for the point whose forward step lands
exactly where the inversion stands (as in "exact" / fixed-point DDIM inversion), so decoding the
inverted noise with the same steps gives the image back up to float rounding when they converge
(each costs one more network pass per step).

Unlike :mod:`studio.models.diffusion.samplers` (diffusers' schedulers, which clip the predicted
x_0 to [-1, 1]), nothing here clips along the way: a clip has no inverse. Only the final image is
clamped by the caller. The network is any ``model_fn(x, t) -> output`` (epsilon or v).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DDIMPath:
    """The ``N`` timesteps of a deterministic DDIM run, noisiest first, and alpha-bar at each
    point of the path: ``alphas[i]`` at ``timesteps[i]``, ``alphas[N] = 1`` (the clean image)."""

    timesteps: Tensor  # long, N, descending
    alphas: Tensor  # float64, N + 1

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())


def ddim_path(alphas_cumprod: Tensor, timesteps: Tensor) -> DDIMPath:
    """The path through ``timesteps`` (descending, e.g. a diffusers scheduler's after
    ``set_timesteps``) of the noise process whose alpha-bar is ``alphas_cumprod``."""
    ts = torch.as_tensor(timesteps).detach().cpu().long().reshape(-1)
    if ts.numel() < 1 or bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError("DDIM timesteps must be a non-empty, strictly descending sequence")
    ac = torch.as_tensor(alphas_cumprod).detach().cpu().double()
    alphas = torch.cat([ac[ts], torch.ones(1, dtype=torch.float64)])
    return DDIMPath(ts, alphas)


def split_output(
    output: Tensor, x: Tensor, alpha: float, prediction_type: str = "epsilon"
) -> tuple[Tensor, Tensor]:
    """(eps, x0) implied by the network's ``output`` at ``x`` where alpha-bar is ``alpha``."""
    sa, sb = alpha**0.5, (1.0 - alpha) ** 0.5
    if prediction_type == "epsilon":
        eps = output
        return eps, (x - sb * eps) / sa
    if prediction_type == "v_prediction":
        return sa * output + sb * x, sa * x - sb * output
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def ddim_move(x: Tensor, eps: Tensor, alpha_from: float, alpha_to: float) -> Tensor:
    """One deterministic DDIM move of ``x`` from alpha-bar ``alpha_from`` to ``alpha_to`` along
    noise direction ``eps`` (either way along the path)."""
    y = x / alpha_from**0.5
    s_from = ((1.0 - alpha_from) / alpha_from) ** 0.5
    s_to = ((1.0 - alpha_to) / alpha_to) ** 0.5
    return (y + (s_to - s_from) * eps) * alpha_to**0.5


def _eps(model_fn: ModelFn, x: Tensor, t: Tensor, alpha: float, prediction_type: str) -> Tensor:
    return split_output(model_fn(x, t).to(x.dtype), x, alpha, prediction_type)[0]


def ddim_decode_iter(
    model_fn: ModelFn, x_t: Tensor, path: DDIMPath, prediction_type: str = "epsilon"
) -> Generator[int, None, Tensor]:
    """Sample: run the path from the noise ``x_t`` to the image (not clamped). Yields the
    number of steps done after each network pass; returns x_0."""
    x = x_t
    alphas = path.alphas.tolist()
    for i, t in enumerate(path.timesteps.to(x.device)):
        eps = _eps(model_fn, x, t, alphas[i], prediction_type)
        x = ddim_move(x, eps, alphas[i], alphas[i + 1])
        yield i + 1
    return x


def ddim_invert_iter(
    model_fn: ModelFn,
    x_0: Tensor,
    path: DDIMPath,
    prediction_type: str = "epsilon",
    refine: int = 0,
) -> Generator[int, None, Tensor]:
    """Invert: run the path backward from the image ``x_0`` (in [-1, 1]) to its noise x_T.

    Step i (from the cleanest end) starts where alpha-bar is ``alphas[i + 1]`` and solves for
    the ``x`` at ``timesteps[i]`` whose forward step lands there: first with eps taken at the
    starting point (plain DDIM inversion), then ``refine`` fixed-point updates with eps at the
    current guess. Yields the number of network passes so far; returns x_T.
    """
    if refine < 0:
        raise ValueError("refine must be >= 0")
    x = x_0
    alphas = path.alphas.tolist()
    timesteps = path.timesteps.to(x.device)
    passes = 0
    for i in reversed(range(path.steps)):
        t, a_here, a_there = timesteps[i], alphas[i + 1], alphas[i]
        # The point at a_there that the step from x (at a_here) backward along eps(guess)
        # reaches; the fixed point of this map is the exact inverse of the forward step.
        step = (t, a_here, a_there, prediction_type)
        guess = _back(model_fn, x, x, *step)  # plain DDIM inversion: eps where it starts
        passes += 1
        yield passes
        # The forward step from a guess g misses x by exactly |back(g) - g| (over
        # sqrt(alpha-bar)); refine while that shrinks and keep the best guess, so a fixed
        # point that does not contract never makes the inversion worse.
        last, last_miss = guess, math.inf
        for _ in range(refine):
            new = _back(model_fn, x, guess, *step)
            passes += 1
            yield passes
            miss = float((new - guess).abs().amax())
            if miss >= last_miss:
                guess = last
                break
            last, last_miss, guess = guess, miss, new
        x = guess
    return x


def _back(
    model_fn: ModelFn,
    x: Tensor,
    guess: Tensor,
    t: Tensor,
    a_here: float,
    a_there: float,
    prediction_type: str,
) -> Tensor:
    eps = _eps(model_fn, guess, t, a_there, prediction_type)
    return ddim_move(x, eps, a_here, a_there)
