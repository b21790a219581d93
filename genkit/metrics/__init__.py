"""Metrics: Frechet distances (FD-OpenMoji, FID) over torchmetrics, reference statistics, class accuracy of
conditional samples, ODE error, within-class spread. See frechet.py, features.py, ode_error.py, diversity.py."""

from .diversity import within_class_spread
from .features import FEATURE_KINDS, OpenMojiFeatureNet, load_inception, load_openmoji_features, to_unit_range
from .frechet import FrechetDistance, ReferenceStats, frechet_distance
from .ode_error import REFERENCE_SOLVER, REFERENCE_STEPS, ode_error

__all__ = ["FEATURE_KINDS", "OpenMojiFeatureNet", "load_inception", "load_openmoji_features", "to_unit_range",
           "FrechetDistance", "ReferenceStats", "frechet_distance", "ode_error", "REFERENCE_SOLVER",
           "REFERENCE_STEPS", "within_class_spread"]
