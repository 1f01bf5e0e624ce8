"""Upscaling jobs: admitted at once, run by sender threads, watched and fetched later.

:mod:`~watercolor.api.jobs.store` keeps them on disk (state, uploads,
results, bounds, expiry, recovery after a restart);
:mod:`~watercolor.api.jobs.runner` runs them through the backends.
"""

from watercolor.api.jobs.runner import Jobs

__all__ = ["Jobs"]
