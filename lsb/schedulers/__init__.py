"""diffusers-loadable schedulers (one SchedulerMixin + ConfigMixin class per file)."""

from .scheduling_lsb import LSBScheduler, LSBSchedulerOutput

__all__ = ["LSBScheduler", "LSBSchedulerOutput"]
