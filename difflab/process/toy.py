"""A toy world with exact answers: Gaussian mixtures and their diffused marginals in closed form.

If the data are x0 ~ Σ_k w_k N(μ_k, Σ_k) and x_t = α x0 + σ ε (any VP schedule, discrete or
continuous), then x_t ~ Σ_k w_k N(α μ_k, α² Σ_k + σ² I). Each Σ_k is diagonalised once,
Σ_k = U_k diag(λ_k) U_kᵀ, and the diffused covariance shares U_k with eigenvalues α² λ_k + σ², so
density, score, ε and the posterior p(x0 | x_t) at any (α, σ), per sample, cost one projection.

Shapes: D data dimensions, K components, N points. Internally float64.
"""
from __future__ import annotations

import math

import torch

from .schedules import F64


class GaussianMixture:
    """Σ_k w_k N(μ_k, Σ_k) in D dimensions.

    Args:
        means: (K, D).
        stds: isotropic component std, float or (K,) — used when ``covs`` is None.
        weights: (K,) non-negative, normalised here; uniform when None.
        covs: (K, D, D) full covariances (overrides ``stds``).
    """

    def __init__(self, means, stds=None, weights=None, covs=None):
        self.means = torch.as_tensor(means, dtype=F64).reshape(len(means), -1)
        K, D = self.means.shape
        if covs is None:
            s = torch.as_tensor(1.0 if stds is None else stds, dtype=F64).reshape(-1).expand(K)
            self.eigvals = (s**2)[:, None].expand(K, D).clone()
            self.eigvecs = torch.eye(D, dtype=F64).expand(K, D, D).clone()
        else:
            covs = torch.as_tensor(covs, dtype=F64)
            covs = 0.5 * (covs + covs.transpose(-1, -2))
            self.eigvals, self.eigvecs = torch.linalg.eigh(covs)
            if (self.eigvals <= 0).any():
                raise ValueError("every component covariance must be positive definite")
        w = torch.ones(K, dtype=F64) if weights is None else torch.as_tensor(weights, dtype=F64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"mixture weights must be non-negative with a positive sum, got {w.tolist()}")
        self.weights = w / w.sum()

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covs(self) -> torch.Tensor:
        """(K, D, D) component covariances."""
        U, lam = self.eigvecs, self.eigvals
        return U @ torch.diag_embed(lam) @ U.transpose(-1, -2)

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        """(D, D) covariance of the whole mixture."""
        m = self.mean()
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """(n, D) float64 samples (and (n,) component labels if asked)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=F64, generator=generator)
        x = self.means[k] + (self.eigvecs[k] @ (self.eigvals[k].sqrt() * z)[:, :, None])[:, :, 0]
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ diffused marginals
    @staticmethod
    def _coef(c, n: int) -> torch.Tensor:
        """A scalar or (N,) coefficient as an (N, 1, 1) float64 tensor."""
        return torch.as_tensor(c, dtype=F64).reshape(-1).expand(n)[:, None, None]

    def _project(self, x: torch.Tensor, alpha=1.0, sigma=0.0):
        """z (N,K,D) in each component's eigenbasis, var (N,K,D), log component densities (N,K)."""
        x = torch.as_tensor(x, dtype=F64)
        n = x.shape[0]
        a, s = self._coef(alpha, n), self._coef(sigma, n)
        diff = x[:, None, :] - a * self.means[None]  # (N,K,D)
        z = torch.einsum("kdj,nkd->nkj", self.eigvecs, diff)
        var = a**2 * self.eigvals[None] + s**2
        logn = -0.5 * ((z**2 / var) + torch.log(2 * math.pi * var)).sum(-1)
        return z, var, logn

    def log_prob(self, x, alpha=1.0, sigma=0.0) -> torch.Tensor:
        """log density (N,) of x under the mixture diffused to (α, σ) (α=1, σ=0: the data)."""
        _, _, logn = self._project(x, alpha, sigma)
        return torch.logsumexp(logn + torch.log(self.weights), dim=1)

    def responsibilities(self, x, alpha=1.0, sigma=0.0) -> torch.Tensor:
        """p(component k | x) under the diffused mixture, (N, K)."""
        _, _, logn = self._project(x, alpha, sigma)
        return torch.softmax(logn + torch.log(self.weights), dim=1)

    def score(self, x, alpha=1.0, sigma=0.0) -> torch.Tensor:
        """∇_x log p(x) under the mixture diffused to (α, σ), (N, D)."""
        z, var, logn = self._project(x, alpha, sigma)
        r = torch.softmax(logn + torch.log(self.weights), dim=1)  # (N,K)
        comp = -torch.einsum("kdj,nkj->nkd", self.eigvecs, z / var)  # (N,K,D)
        return (r[:, :, None] * comp).sum(1)

    def diffuse(self, alpha: float, sigma: float) -> "GaussianMixture":
        """The marginal at one (α, σ) as a mixture of its own."""
        covs = alpha**2 * self.covs + sigma**2 * torch.eye(self.dim, dtype=F64)
        return GaussianMixture(alpha * self.means, weights=self.weights, covs=covs)

    def marginal(self, schedule, t: float) -> "GaussianMixture":
        return self.diffuse(float(schedule.alpha(t)), float(schedule.sigma(t)))

    # ------------------------------------------------------------------ posterior p(x0 | x_t)
    def posterior_x0(self, x_t, alpha, sigma):
        """Exact p(x0 | x_t): a mixture per point.

        Returns (weights (N,K), means (N,K,D), eigvecs (K,D,D), variances (N,K,D)): component k of
        point n is N(means[n,k], U_k diag(variances[n,k]) U_kᵀ).
        """
        z, var, logn = self._project(x_t, alpha, sigma)
        n = z.shape[0]
        a, s = self._coef(alpha, n), self._coef(sigma, n)
        lam = self.eigvals[None]
        gain = a * lam / var  # Σ α (α²Σ+σ²I)^-1 in the eigenbasis
        mean = self.means[None] + torch.einsum("kdj,nkj->nkd", self.eigvecs, gain * z)
        post_var = lam * s**2 / var
        w = torch.softmax(logn + torch.log(self.weights), dim=1)
        return w, mean, self.eigvecs, post_var

    def posterior_mean_x0(self, x_t, alpha, sigma) -> torch.Tensor:
        """E[x0 | x_t], (N, D): the ideal denoiser (Tweedie)."""
        w, mean, _, _ = self.posterior_x0(x_t, alpha, sigma)
        return (w[:, :, None] * mean).sum(1)

    def posterior_var_x0(self, x_t, alpha, sigma) -> torch.Tensor:
        """Per-dimension Var[x0 | x_t], (N, D) (the diagonal of the posterior covariance)."""
        w, mean, U, var = self.posterior_x0(x_t, alpha, sigma)
        comp_diag = torch.einsum("kdj,nkj->nkd", U**2, var)
        m = (w[:, :, None] * mean).sum(1)
        return (w[:, :, None] * (comp_diag + mean**2)).sum(1) - m**2

    def sample_posterior_x0(self, x_t, alpha, sigma, generator=None) -> torch.Tensor:
        """One exact sample of p(x0 | x_t) per row, (N, D)."""
        w, mean, U, var = self.posterior_x0(x_t, alpha, sigma)
        k = torch.multinomial(w, 1, generator=generator)[:, 0]
        idx = torch.arange(w.shape[0])
        z = torch.randn(w.shape[0], self.dim, dtype=F64, generator=generator)
        return mean[idx, k] + (U[k] @ (var[idx, k].sqrt() * z)[:, :, None])[:, :, 0]


def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.2, weights=None) -> GaussianMixture:
    """k isotropic Gaussians evenly spaced on a circle."""
    ang = torch.arange(k, dtype=F64) * 2 * math.pi / k
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return GaussianMixture(means, stds=std, weights=weights)


def grid_mixture(n: int = 5, spacing: float = 1.0, std: float = 0.1, weights=None) -> GaussianMixture:
    """An n×n grid of isotropic Gaussians centred at the origin."""
    c = (torch.arange(n, dtype=F64) - (n - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    return GaussianMixture(means, stds=std, weights=weights)
